import { env, AutoTokenizer } from '@huggingface/transformers';
env.allowRemoteModels = false; env.localModelPath = '/tmp/tjs/';
const dir = process.argv[2];
const tok = await AutoTokenizer.from_pretrained(dir);
const strings = JSON.parse(process.argv[3]);
const out = [];
for (const s of strings) {
  const ids = tok.encode(s);  // add_special_tokens default true
  const plain = tok.encode(s, { add_special_tokens: false });
  out.push({ text: s, ids, ids_no_special: plain, decoded: plain.length ? tok.decode(plain) : "" });
}
console.log(JSON.stringify(out));
