import { AutoTokenizer, AutoModelForCausalLM, env, Tensor } from '@huggingface/transformers';
import fs from 'fs';
env.allowRemoteModels = false;
env.localModelPath = process.argv[2];
const name = process.argv[3];
const ref = JSON.parse(fs.readFileSync(process.argv[4], 'utf8'));
const model = await AutoModelForCausalLM.from_pretrained(name, { dtype: 'fp32' });
const ids = ref.greedy.prompt_ids;
const input_ids = new Tensor('int64', BigInt64Array.from(ids.map(BigInt)), [1, ids.length]);
const attention_mask = new Tensor('int64', BigInt64Array.from(ids.map(() => 1n)), [1, ids.length]);
const out = await model.generate({ input_ids, attention_mask, max_new_tokens: 32, min_new_tokens: 32, do_sample: false, eos_token_id: 999999 });
const gen = Array.from(out.data).slice(ids.length).map(Number);
const same = JSON.stringify(gen) === JSON.stringify(ref.greedy.generated_ids);
console.log('transformers.js greedy', same ? 'MATCHES' : 'DIFFERS', JSON.stringify(gen));
if (!same) console.log('python                 ', JSON.stringify(ref.greedy.generated_ids));
if (process.argv[5]) {
  const tok = await AutoTokenizer.from_pretrained(name);
  const msgs = [{ role: 'user', content: process.argv[5] }];
  const inputs = tok.apply_chat_template(msgs, { add_generation_prompt: true, return_dict: true });
  const o = await model.generate({ ...inputs, max_new_tokens: 80, do_sample: false });
  const all = Array.from(o[0].data).map(Number); console.log(JSON.stringify(tok.decode(all.slice(inputs.input_ids.dims[1]), { skip_special_tokens: false })));
}
