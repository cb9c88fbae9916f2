import { AutoTokenizer, AutoModelForCausalLM, env } from '@huggingface/transformers';
import fs from 'fs';
env.allowRemoteModels = false;
env.localModelPath = process.argv[2];
const name = process.argv[3];
const rows = fs.readFileSync(process.argv[4], 'utf8').trim().split('\n').map(JSON.parse);
const perGroup = Number(process.argv[5] || 1);
const tok = await AutoTokenizer.from_pretrained(name);
const model = await AutoModelForCausalLM.from_pretrained(name, { dtype: 'fp32' });
async function gen(content) {
  const inputs = tok.apply_chat_template([{ role: 'user', content }], { add_generation_prompt: true, return_dict: true });
  const o = await model.generate({ ...inputs, max_new_tokens: 96, do_sample: false });
  const all = Array.from(o[0].data).map(Number).slice(inputs.input_ids.dims[1]);
  return tok.decode(all, { skip_special_tokens: true });
}
const counts = {};
const out = [];
for (const r of rows) {
  const g = r.instruction_id_list.join('+');
  counts[g] = (counts[g] || 0) + 1;
  if (counts[g] > perGroup) continue;
  out.push({ ...r, without: await gen(r.prompt), with: await gen(r.prompt + ' ' + r.instruction) });
}
fs.writeFileSync(process.argv[6], JSON.stringify(out, null, 1));
console.log('wrote', out.length);
