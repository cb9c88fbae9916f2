import json
def b2u():
    bs=list(range(ord('!'),ord('~')+1))+list(range(0xA1,0xAD))+list(range(0xAE,0x100))
    m={};n=0
    for b in range(256):
        if b in bs: m[b]=chr(b)
        else: m[b]=chr(256+n); n+=1
    return m
m=b2u()
vocab={m[b]:b for b in range(256)}
merges=[("Ġ","t"),("h","e"),("Ġt","he"),("i","n"),("Ġ","a"),("r","e"),("o","n"),("Ġa","n"),("Ġan","d"),("l","l"),("e","ll"),("h","ell"),("H","ell"),("Hell","o"),("Ġ","w"),("o","r"),("Ġw","or"),("Ġwor","l"),("Ġworl","d"),("Ã","©")]
for a,b in merges: vocab[a+b]=len(vocab)
added=[{"id":len(vocab)+i,"content":c,"single_word":False,"lstrip":False,"rstrip":False,"normalized":False,"special":True} for i,c in enumerate(["<|endoftext|>","<|im_start|>","<|im_end|>"])]
tok={"version":"1.0","truncation":None,"padding":None,"added_tokens":added,"normalizer":{"type":"NFC"},
"pre_tokenizer":{"type":"Sequence","pretokenizers":[{"type":"Split","pattern":{"Regex":"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},"behavior":"Isolated","invert":False},{"type":"ByteLevel","add_prefix_space":False,"trim_offsets":False,"use_regex":False}]},
"post_processor":{"type":"ByteLevel","add_prefix_space":False,"trim_offsets":False,"use_regex":False},
"decoder":{"type":"ByteLevel","add_prefix_space":False,"trim_offsets":False,"use_regex":False},
"model":{"type":"BPE","dropout":None,"unk_token":None,"continuing_subword_prefix":"","end_of_word_suffix":"","fuse_unk":False,"byte_fallback":False,"ignore_merges":False,"vocab":vocab,"merges":[a+" "+b for a,b in merges]}}
json.dump(tok,open('bytebpe/tokenizer.json','w'),ensure_ascii=False)
json.dump({"add_bos_token":False,"bos_token":None,"eos_token":"<|im_end|>","pad_token":"<|endoftext|>","tokenizer_class":"Qwen2Tokenizer","model_max_length":512},open('bytebpe/tokenizer_config.json','w'))
