import { AutoTokenizer, env } from '@huggingface/transformers';
import fs from 'fs';
env.allowRemoteModels = false;
env.localModelPath = process.argv[2];
const tok = await AutoTokenizer.from_pretrained('tokenizer');
const g = JSON.parse(fs.readFileSync(process.argv[3], 'utf8'));
let bad = 0;
for (const p of g.pairs) {
  const ids = tok.encode(p.text, { add_special_tokens: false });
  const ids2 = tok.encode(p.text);
  const same = JSON.stringify(ids) === JSON.stringify(p.ids) && JSON.stringify(ids2) === JSON.stringify(p.ids);
  const dec = tok.decode(ids);
  if (!same || dec !== p.text) { bad++; console.log('MISMATCH', JSON.stringify(p.text), JSON.stringify(ids), JSON.stringify(p.ids), JSON.stringify(dec)); }
}
const msgs = [{role:'user', content:'Describe the owl.'}];
const s = tok.apply_chat_template(msgs, {tokenize:false, add_generation_prompt:true});
console.log(JSON.stringify(s));
console.log('golden', g.pairs.length, 'mismatches', bad);
