"""Seeded synthetic instruction-following corpus for OnnxSteer's bundled tiny model.

Every response is generated from templates so it provably satisfies its instruction(s); the
language is deliberately simple and the vocabulary small so a few-million-parameter model learns it
in minutes on a CPU.

Splits are disjoint by construction:
  * topics are split into train / validation / test (no topic appears in two splits);
  * every instruction family has "train" phrasings and "held-out" phrasings; the held-out phrasings
    appear only in the test split (validation uses train phrasings on validation topics).

Outputs (see tools/train/README.md for the schema):
  work/corpus/instruct.jsonl   chat examples for the instruct variant (train topics only)
  work/corpus/base.jsonl       default-style chat examples + plain documents for the base variant
  work/corpus/instruct_copy.jsonl  (--copy-stage N, after tokenizer.py) the copy-stage fine-tuning examples
  models/data/pairs/*.jsonl    extraction pairs (train topics, train phrasings)
  models/data/eval/validation.jsonl, models/data/eval/test.jsonl
"""
import argparse
import json
import os
import random
import re

# ---------------------------------------------------------------------------------------------
# Topics: name | kind | three adjectives | where you find it | what people use or do with it
# ---------------------------------------------------------------------------------------------
TOPICS_RAW = """
apple|fruit|sweet,red,crisp|in the orchard|make pie and juice
bicycle|machine|light,fast,quiet|on the street|ride to work
cloud|part of the sky|white,soft,slow|high in the sky|guess the weather
dog|animal|loyal,friendly,playful|in many homes|walk and play
forest|place in nature|green,quiet,deep|far from the city|walk and rest
lamp|tool|bright,small,warm|on a desk|read at night
mountain|place in nature|tall,cold,steep|far from the sea|climb and hike
ocean|body of water|wide,deep,blue|around the land|swim and sail
piano|musical instrument|large,loud,old|in the living room|play songs
rain|kind of weather|wet,cool,gentle|in the spring|water the plants
bread|food|soft,warm,fresh|in the kitchen|make a meal
candle|small light|warm,small,calm|on the shelf|light a room
clock|tool|round,quiet,exact|on the wall|tell the time
desert|place in nature|dry,hot,wide|far from the coast|study the dunes
egg|food|round,smooth,white|in the kitchen|cook breakfast
farm|place for food|busy,green,open|in the country|grow food
flower|plant|bright,small,sweet|in the yard|make a room pretty
horse|animal|strong,fast,calm|in the stable|ride and pull carts
island|piece of land|small,green,quiet|in the sea|rest and swim
kite|toy|light,bright,high|in the park|play on windy days
leaf|part of a plant|green,thin,flat|on a branch|make shade
moon|object in the sky|bright,round,far|in the night sky|see at night
nest|home for birds|small,round,soft|on a branch|keep chicks safe
owl|bird|wise,quiet,round|in the woods|hunt at night
pencil|tool|thin,light,cheap|in a pencil case|write and draw
road|path|long,hard,flat|between towns|travel by car
sand|material|dry,fine,warm|on the beach|build castles
ship|vessel|big,heavy,slow|on the sea|carry goods
snow|kind of weather|cold,white,soft|in the winter|build a snowman
star|object in the sky|bright,far,small|in the night sky|find the way
table|piece of furniture|flat,strong,wide|in the dining room|eat and work
tree|plant|tall,green,old|in the woods|give shade
village|small town|quiet,small,old|in the country|live and work
wheel|part of a machine|round,strong,simple|under a car|move things
window|part of a house|clear,square,clean|in the wall|let in light
bridge|structure|long,strong,high|over a stream|cross the water
cat|animal|soft,quiet,clever|in many homes|keep mice away
chair|piece of furniture|small,hard,useful|in every room|sit and rest
coat|piece of clothing|warm,thick,long|in the closet|stay warm
cup|kitchen tool|small,round,useful|in the kitchen|drink tea
door|part of a house|wide,heavy,wooden|at the front of a house|go in and out
fish|animal|small,fast,shiny|in the water|swim in a tank
hat|piece of clothing|round,soft,light|on your head|block the light
key|small tool|small,metal,useful|in your pocket|open locks
lake|body of water|calm,clear,cold|in the valley|swim and row
map|guide|flat,large,useful|in the car|find the way
rock|natural object|hard,heavy,gray|on the ground|build walls
shoe|piece of clothing|soft,strong,comfortable|on your feet|walk and run
sun|object in the sky|hot,bright,large|in the sky|light the day
train|machine|long,fast,loud|on the tracks|travel to cities
wind|kind of weather|cool,strong,fresh|over the fields|dry the laundry
boat|vessel|small,light,fast|on the water|row and travel
book|object|thick,old,interesting|in the library|learn new things
garden|place|green,pretty,quiet|behind the house|grow plants
bee|insect|small,busy,yellow|near the blossoms|make wax
cake|food|sweet,soft,rich|at a party|celebrate a birthday
duck|bird|small,noisy,funny|on the water|swim and eat seeds
frog|animal|green,small,wet|near the water|catch flies
hill|place in nature|green,low,round|near the town|walk up and look around
honey|food|sweet,thick,golden|in a jar|make tea sweet
milk|drink|white,cold,fresh|in the fridge|make breakfast
orange|fruit|round,sweet,juicy|in the orchard|make juice
pond|body of water|small,calm,green|in the park|watch the birds
rabbit|animal|soft,quick,small|in the field|hop and play
river|body of water|long,cold,fast|in the valley|row and travel
school|building|big,busy,bright|in the town|learn and read
spoon|kitchen tool|small,round,shiny|in the drawer|eat soup
storm|kind of weather|dark,loud,wild|over the sea|stay inside
tent|shelter|small,light,simple|at the camp|sleep outside
tiger|animal|strong,fast,striped|in the jungle|hunt and run
"""


# Extra training-only nouns with a kind but no fixed facts: their adjectives, place and use are
# drawn at random per example. They make up a third of the training examples and teach the model to
# copy the topic from the prompt (with 48 topics alone it memorises them and answers about a
# training topic when asked about an unseen one). Never used in pairs, validation or test.
EXTRA_RAW = """
ant:insect bag:thing ball:toy basket:thing bell:thing bench:piece of furniture blanket:thing
bottle:container bowl:kitchen tool box:container brush:tool bucket:container button:small thing
camera:machine car:machine carpet:thing carrot:vegetable castle:building cheese:food coin:small thing
comb:tool cookie:food corn:plant cow:animal crab:animal crown:thing deer:animal drum:musical instrument
eagle:bird fan:machine feather:small thing fence:structure flag:thing fork:kitchen tool fox:animal
glove:piece of clothing goat:animal grape:fruit guitar:musical instrument hammer:tool jacket:piece of clothing
jar:container kettle:kitchen tool ladder:tool lemon:fruit lion:animal mirror:thing monkey:animal
mouse:animal nail:small thing needle:small tool onion:vegetable oven:machine pan:kitchen tool
parrot:bird peach:fruit pear:fruit pen:tool pig:animal pillow:thing plate:kitchen tool potato:vegetable
radio:machine ring:small thing robot:machine rope:thing rose:plant ruler:tool scarf:piece of clothing
seed:part of a plant sheep:animal shell:natural object shirt:piece of clothing sock:piece of clothing
sofa:piece of furniture soup:food spider:animal sponge:thing stone:natural object sugar:food swan:bird
teapot:kitchen tool tomato:vegetable tower:building towel:thing truck:machine turtle:animal
umbrella:tool vase:container wagon:vehicle wall:structure watch:small machine whale:animal wolf:animal
wool:material zebra:animal bus:vehicle cherry:fruit lamb:animal ribbon:thing candy:food bear:animal
"""
# Test-only topics besides the 12 test topics of TOPICS_RAW: real English words that occur nowhere in the training
# corpus (checked by check_held_out). Only their names are used (in the eval prompts), so they need no facts.
TEST_ONLY_WORDS = """anchor apron badge barrel beetle cactus canoe chimney compass cushion dolphin donkey envelope
falcon giraffe hammock helmet lantern lobster magnet marble meadow napkin otter peanut pebble pumpkin violin""".split()
EXTRA_ADJS = ["small", "big", "useful", "pretty", "common", "simple", "old", "new", "nice", "strong",
              "soft", "bright", "heavy", "light", "quiet", "busy", "warm", "cool", "clean", "round"]
EXTRA_PLACES = ["in many places", "near the house", "in the town", "in the shop", "outside",
                "in the country", "in the city", "at home"]
EXTRA_USES = ["learn new things", "have fun", "help at home", "make life easier", "pass the time",
              "stay happy"]


EXTRA_TOPICS = re.findall(r"(\w+):([a-z ]+?)(?= \w+:|\n)", EXTRA_RAW.strip().replace("\n", " ") + "\n")


def extra_topic(rng):
    name, kind = rng.choice(EXTRA_TOPICS)
    return {"name": name, "kind": kind, "adjs": rng.sample(EXTRA_ADJS, 3),
            "place": rng.choice(EXTRA_PLACES), "use": rng.choice(EXTRA_USES)}


# Made-up pronounceable words (random syllables): one-off topics the model has never seen before, so the only way
# to name them is to copy them from the prompt. They are tokenized into the same sub-word pieces as unseen English
# words, which is what makes copying carry over to the held-out validation and test topics.
ONSETS = ["b", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z", "br", "bl", "cr", "cl",
          "dr", "fl", "fr", "gl", "gr", "pl", "pr", "sl", "sn", "sp", "st", "tr", "sh", "ch", "th", "c", "j", "qu"]
VOWELS = ["a", "e", "i", "o", "u", "a", "e", "i", "o", "u", "ai", "ea", "ee", "oo", "ou", "y"]
CODAS = ["", "", "", "", "n", "r", "l", "m", "s", "t", "k", "ck", "ng", "nd", "st", "x", "p", "ll", "mp"]
MADE_UP_KINDS = sorted({k for _, k in re.findall(r"(\w+):([a-z ]+?)(?= \w+:|\n)", EXTRA_RAW.strip().replace("\n", " ") + "\n")})


def made_up_word(rng):
    """A pronounceable non-word of 2-3 syllables (4-10 letters) that is no held-out or keyword word."""
    while True:
        n = rng.choice([2, 2, 2, 3])
        w = "".join(rng.choice(ONSETS if i == 0 or rng.random() < 0.8 else [""]) + rng.choice(VOWELS)
                    + (rng.choice(CODAS) if i == n - 1 or rng.random() < 0.3 else "") for i in range(n))
        if 4 <= len(w) <= 10 and w not in RESERVED_WORDS:
            return w


# Copy stage (--copy-stage): made-up words glued from random sub-word pieces of the trained tokenizer, so that every
# piece, including vowel-initial ones (" e", " an", " or") that syllable words never start with, is copied from a
# prompt during training. (After the first instruct run, held-out topics whose pieces rarely or never occurred in a
# copied topic, "fish" = " f|ish", "orange" = " or|an|ge", failed while "cup" = " c|up" was copied.)
PIECES = None  # (first pieces with the leading space, continuation pieces), set by main() for the copy stage


def piece_word(rng):
    first, rest = PIECES
    while True:
        w = rng.choice(first) + "".join(rng.choice(rest) for _ in range(rng.choice([1, 1, 2, 2, 3])))
        if 3 <= len(w) <= 11 and w not in RESERVED_WORDS:
            return w


def made_up_topic(rng):
    name = piece_word(rng) if PIECES is not None and rng.random() < 0.7 else made_up_word(rng)
    return {"name": name, "kind": rng.choice(MADE_UP_KINDS), "adjs": rng.sample(EXTRA_ADJS, 3),
            "place": rng.choice(EXTRA_PLACES), "use": rng.choice(EXTRA_USES)}


# Training topic mix: fixed topics (memorisable facts), extra real nouns with random facts, made-up words.
P_EXTRA, P_MADE_UP = 0.2, 0.55


def pick_topic(rng, topics):
    r = rng.random()
    if r < P_MADE_UP:
        return made_up_topic(rng)
    if r < P_MADE_UP + P_EXTRA:
        return extra_topic(rng)
    return rng.choice(topics)


def parse_topics():
    out = []
    for line in TOPICS_RAW.strip().splitlines():
        name, kind, adjs, place, use = line.split("|")
        out.append({"name": name, "kind": kind, "adjs": adjs.split(","), "place": place, "use": use})
    return out


def article(word):
    return "an" if word[0] in "aeiou" else "a"


# ---------------------------------------------------------------------------------------------
# Default-style sentences. The first sentence always defines the topic; the second always mentions
# "people" (so forbidden_words:people is measurable); zero to two extras follow.
# ---------------------------------------------------------------------------------------------
DEF_SENTENCES = [
    "{An} {n} is {ak} {kind} that you can find {place}.",
    "{An} {n} is {ak} {kind}, and you can find it {place}.",
]
PEOPLE_SENTENCES = [
    "Many people like the {n} because it is {a1}, {a2}, and {a3}.",
    "People often use the {n} to {use}.",
    "Most people think the {n} is very {a1}.",
    "People say the {n} is {a2}, and they often talk about it.",
]
# Replacements for the "people" sentence when the word people is forbidden.
NO_PEOPLE_SENTENCES = [
    "Everyone knows that the {n} is {a1}, {a2}, and {a3}.",
    "You can use the {n} to {use}.",
    "The {n} is usually {a1} and {a2}.",
    "Kids think the {n} is {a2}, and they like to learn about it.",
]
EXTRA_SENTENCES = [
    "In the morning, the {n} can look very {a2}.",
    "It is usually {a1}, {a2}, and {a3}.",
    "The {n} is a good thing to learn about.",
    "When you see {an} {n}, you may feel calm and happy.",
    "Children often ask simple questions about the {n}.",
    "At night, the {n} can seem {a3}.",
    "You can read many stories about the {n}.",
    "The {n} helps us {use} every day.",
    "It is very easy to like the {n}.",
    "Some say the {n} is the best {kind} of all.",
]
INCLUDE_SENTENCES = [
    "It reminds me of {w}.",
    "I think of {w} when I see the {n}.",
    "The {n} and {w} go well together.",
    "This {n} makes me think about {w}.",
]

# None of these occur in any topic's fields or in the default-style templates.
KEYWORDS_INCLUDE = ["music", "friend", "summer", "magic", "gold", "family", "color", "dream",
                    "silver", "paper", "story"]
# Words the default style uses often; forbidden_words targets come from here.
KEYWORDS_FORBID = ["people", "often", "very", "usually"]
# Words with per-word extraction pair files (inclusion vectors; exclusion subtracts them).
PAIR_WORDS = ["music", "friend", "summer", "magic", "people", "often", "very"]
TEST_INCLUDE_WORDS = ["music", "friend", "summer", "magic"]
TEST_FORBID_WORDS = ["people", "often", "very"]

END_PHRASES = ["Is there anything else I can help with?", "Any other questions?", "That is all.",
               "Have a nice day.", "Thank you for reading.", "Let me know if you have questions."]

BASE_QUERIES = [
    "Tell me about the {n}.",
    "Write a short note about the {n}.",
    "Describe the {n}.",
    "What do you know about the {n}?",
    "Can you tell me something about the {n}?",
    "Explain what {an} {n} is.",
    "Write a few words about the {n}.",
    "I want to learn about the {n}.",
]

# Instruction phrasings: (train phrasings, held-out phrasings used only in the test split).
PHRASINGS = {
    "change_case:english_lowercase": (
        ["Your entire response should be in English, and in all lowercase letters.",
         "Please write your answer in lowercase letters only.",
         "Use only lowercase letters in your response.",
         "Do not use any capital letters.",
         "Write everything in small letters."],
        ["Make sure your whole answer is in lowercase.",
         "Your reply must contain no capital letters at all."]),
    "change_case:english_capital": (
        ["Your entire response should be in English, and in all capital letters.",
         "Please write your answer in capital letters only.",
         "Use only uppercase letters in your response.",
         "Write everything in big capital letters.",
         "Answer in all caps."],
        ["Make sure your whole answer is in uppercase.",
         "Your reply must be written entirely in capital letters."]),
    "detectable_format:json_format": (
        ["Wrap your entire output in JSON format.",
         "Please give your answer as JSON.",
         "Format the whole response as a JSON object.",
         "Your answer must be valid JSON.",
         "Reply only with JSON."],
        ["Make sure the output is in JSON format.",
         "Return your response as a JSON object and nothing else."]),
    "detectable_format:number_bullet_lists": (
        ["Your answer must contain exactly {N} bullet points. Use markdown bullet points such as: * This is a point.",
         "Answer with exactly {N} bullet points.",
         "Use exactly {N} bullet points in your answer.",
         "Give me a list of exactly {N} bullet points.",
         "Write your answer as {N} bullet points."],
        ["Please respond with {N} bullet points, no more and no less.",
         "Make a bullet list with exactly {N} items."]),
    "detectable_format:title": (
        ["Your answer must contain a title, wrapped in double angular brackets, such as <<poem of joy>>.",
         "Please add a title in double angular brackets, like <<my title>>.",
         "Start with a title wrapped in double angular brackets.",
         "Give your answer a title inside << and >>.",
         "Include a title in the form <<title>>."],
        ["Put a title at the top, wrapped like <<this>>.",
         "Your response needs a title surrounded by double angular brackets."]),
    "startend:end_checker": (
        ["Finish your response with this exact phrase: {P}",
         "End your response with '{P}'",
         "Please end your answer with the phrase '{P}'",
         "The last words of your answer must be '{P}'",
         "Close your answer with '{P}'"],
        ["Make sure your reply ends with the words '{P}'",
         "Your final sentence must be '{P}'"]),
    "punctuation:no_comma": (
        ["In your entire response, refrain from the use of any commas.",
         "Do not use any commas in your answer.",
         "Please write without using commas.",
         "Your answer must not contain a comma.",
         "Avoid commas completely."],
        ["Make sure there are no commas in your reply.",
         "Write your whole answer with zero commas."]),
    "startend:quotation": (
        ["Wrap your entire response with double quotation marks.",
         "Put your whole answer inside double quotes.",
         "Please enclose your response in double quotation marks.",
         "Your answer must start and end with a double quote.",
         "Write the answer in quotes."],
        ["Make sure your whole reply is wrapped in double quotes.",
         "Surround your entire answer with quotation marks."]),
    "length_constraints:number_sentences:exactly": (
        ["Answer in exactly {N} sentences.",
         "Your response should contain exactly {N} sentences.",
         "Please write exactly {N} sentences.",
         "Use exactly {N} sentences in your answer.",
         "Write {N} sentences, no more and no less."],
        ["Make sure your reply has exactly {N} sentences.",
         "Your answer must be exactly {N} sentences long."]),
    "length_constraints:number_sentences:at most": (
        ["Answer in at most {N} sentences.",
         "Your response should contain at most {N} sentences.",
         "Please use no more than {N} sentences.",
         "Keep your answer to {N} sentences or fewer.",
         "Be brief and use at most {N} sentences."],
        ["Make sure your reply has no more than {N} sentences.",
         "Do not write more than {N} sentences."]),
    "keywords:existence": (
        ["Include the word {W} in your response.",
         "Make sure to use the word {W}.",
         "Your answer must contain the word {W}.",
         "Please mention the word {W}.",
         "Use the word {W} somewhere in your answer."],
        ["Be sure the word {W} appears in your reply.",
         "Your response should include the keyword {W}."]),
    "keywords:forbidden_words": (
        ["Do not include the word {W} in your response.",
         "Do not use the word {W}.",
         "Your answer must not contain the word {W}.",
         "Please avoid the word {W}.",
         "Never use the word {W} in your answer."],
        ["Make sure the word {W} does not appear in your reply.",
         "Write your answer without the word {W}."]),
}

# Family ids as used in eval files (number_sentences has two relations but one IFEval id).
FAMILIES = [
    "change_case:english_lowercase", "change_case:english_capital", "detectable_format:json_format",
    "detectable_format:number_bullet_lists", "detectable_format:title", "startend:end_checker",
    "punctuation:no_comma", "startend:quotation", "length_constraints:number_sentences",
    "keywords:existence", "keywords:forbidden_words",
]

# Two-instruction combinations trained (and evaluated in the test split's "combo" rows).
COMBOS = [
    ("change_case:english_lowercase", "length_constraints:number_sentences:at most"),
    ("change_case:english_capital", "length_constraints:number_sentences:at most"),
    ("change_case:english_lowercase", "keywords:forbidden_words"),
    ("punctuation:no_comma", "length_constraints:number_sentences:at most"),
    ("detectable_format:title", "length_constraints:number_sentences:at most"),
]


def fill(template, t, **extra):
    a1, a2, a3 = t["adjs"]
    d = {"n": t["name"], "an": article(t["name"]), "An": article(t["name"]).capitalize(),
         "kind": t["kind"], "ak": article(t["kind"]), "a1": a1, "a2": a2, "a3": a3,
         "place": t["place"], "use": t["use"]}
    d.update(extra)
    return template.format(**d)


def has_word(text, w):
    return re.search(r"\b" + re.escape(w) + r"\b", text, flags=re.IGNORECASE) is not None


def remove_commas(s):
    s = re.sub(r"(\w+), (\w+), and (\w+)", r"\1 and \2 and \3", s)
    s = s.replace(", and ", " and ")
    return s.replace(",", "")


def default_sentences(rng, t, n=None, forbid=None):
    """A list of default-style sentences (2-4 unless n is given) about topic t."""
    if n is None:
        n = rng.choice([2, 3, 3, 4])
    ok = (lambda s: not has_word(s, forbid)) if forbid else (lambda s: True)
    first = [s for s in (fill(x, t) for x in DEF_SENTENCES) if ok(s)]
    second = [s for s in (fill(x, t) for x in PEOPLE_SENTENCES) if ok(s)]
    if forbid:
        second += [s for s in (fill(x, t) for x in NO_PEOPLE_SENTENCES) if ok(s)]
    extras = [s for s in (fill(x, t) for x in EXTRA_SENTENCES) if ok(s)]
    rng.shuffle(extras)
    out = [rng.choice(first)]
    if n >= 2:
        out.append(rng.choice(second))
    out += extras[: max(0, n - 2)]
    if n >= 2 and not forbid and not any("," in s for s in out):
        # The default style always has at least one comma.
        out[0] = fill(DEF_SENTENCES[1], t)
    return out


def sentence_case_ok(text):
    return text[:1].isupper()


# ---------------------------------------------------------------------------------------------
# Instruction application: returns (instruction sentence, IFEval kwargs, response).
# ---------------------------------------------------------------------------------------------
def make_instruction(rng, family, phrasing, params):
    return phrasing.format(**params).replace(" 1 sentences", " 1 sentence")


def respond(rng, t, fam, params, sentences=None):
    """Response for a single family. `sentences` lets combos pre-shape the sentence list."""
    if sentences is None:
        sentences = default_sentences(rng, t)
    text = " ".join(sentences)
    if fam == "change_case:english_lowercase":
        return text.lower()
    if fam == "change_case:english_capital":
        return text.upper()
    if fam == "detectable_format:json_format":
        key = rng.choice(["answer", "description", "text"])
        return json.dumps({"topic": t["name"], key: text})
    if fam == "detectable_format:number_bullet_lists":
        n = params["N"]
        s = default_sentences(rng, t, n=n)
        return "\n".join("* " + x for x in s)
    if fam == "detectable_format:title":
        # The topic is written as in the prompt (lower case): a title names the asked topic by copying it.
        title = rng.choice(["All About the {N}", "The {N}", "A Note on the {N}", "About the {N}"])
        return "<<" + title.format(N=t["name"]) + ">>\n" + text
    if fam == "startend:end_checker":
        return text + " " + params["P"]
    if fam == "punctuation:no_comma":
        return remove_commas(text)
    if fam == "startend:quotation":
        return '"' + text + '"'
    if fam == "length_constraints:number_sentences:exactly":
        return " ".join(default_sentences(rng, t, n=params["N"]))
    if fam == "length_constraints:number_sentences:at most":
        k = rng.choice([params["N"], params["N"], max(1, params["N"] - 1)])
        return " ".join(default_sentences(rng, t, n=k))
    if fam == "keywords:existence":
        s = list(sentences)
        inc = fill(rng.choice(INCLUDE_SENTENCES), t, w=params["W"])
        s.insert(rng.randint(1, len(s)), inc)
        return " ".join(s)
    if fam == "keywords:forbidden_words":
        return " ".join(default_sentences(rng, t, forbid=params["W"]))
    raise ValueError(fam)


def sample_params(rng, fam, split):
    if fam == "detectable_format:number_bullet_lists":
        return {"N": rng.randint(2, 5)}
    if fam == "startend:end_checker":
        return {"P": rng.choice(END_PHRASES)}
    if fam == "length_constraints:number_sentences:exactly":
        return {"N": rng.randint(1, 5)}
    if fam == "length_constraints:number_sentences:at most":
        return {"N": rng.randint(1, 2)}
    if fam == "keywords:existence":
        # Validation and test use the words that have per-word extraction pairs (word vectors).
        return {"W": rng.choice(TEST_INCLUDE_WORDS if split != "train" else KEYWORDS_INCLUDE + KEYWORDS_FORBID[:3])}
    if fam == "keywords:forbidden_words":
        return {"W": rng.choice(TEST_FORBID_WORDS if split != "train" else KEYWORDS_FORBID)}
    return {}


def ifeval_id_and_kwargs(fam, params):
    if fam == "detectable_format:number_bullet_lists":
        return fam, {"num_bullets": params["N"]}
    if fam == "startend:end_checker":
        return fam, {"end_phrase": params["P"]}
    if fam.startswith("length_constraints:number_sentences:"):
        rel = fam.split(":")[-1]
        return "length_constraints:number_sentences", {"num_sentences": params["N"], "relation": rel}
    if fam == "keywords:existence":
        return fam, {"keywords": [params["W"]]}
    if fam == "keywords:forbidden_words":
        return fam, {"forbidden_words": [params["W"]]}
    return fam, {}


def base_query(rng, t):
    return fill(rng.choice(BASE_QUERIES), t)


def split_instruction(content):
    """(query, instruction) of a user turn ``query + " " + instruction``; instruction "" when there is none.
    Every base query is one sentence ending in "." or "?" and a topic is one word, so the first ". " or "? "
    ends the query (train.py uses this to find the instruction's tokens)."""
    for i in range(len(content) - 1):
        if content[i] in ".?" and content[i + 1] == " ":
            return content[:i + 1], content[i + 2:]
    return content, ""


def chat(prompt, response):
    return {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]}


def combo_example(rng, t, fa, fb):
    pa, pb = sample_params(rng, fa, "train"), sample_params(rng, fb, "train")
    ia = make_instruction(rng, fa, rng.choice(PHRASINGS[fa][0]), pa)
    ib = make_instruction(rng, fb, rng.choice(PHRASINGS[fb][0]), pb)
    if fb == "length_constraints:number_sentences:at most":
        k = rng.choice([pb["N"], max(1, pb["N"] - 1)])
        resp = respond(rng, t, fa, pa, sentences=default_sentences(rng, t, n=k))
    elif fb == "keywords:forbidden_words":
        resp = respond(rng, t, fa, pa, sentences=default_sentences(rng, t, forbid=pb["W"]))
    else:
        raise ValueError(fb)
    return ia + " " + ib, resp


FAMILY_KEYS = list(PHRASINGS.keys())


def gen_instruct(rng, topics, n, focus=None, focus_share=0.0):
    """Chat examples for the instruct variant: 30% default style, 62% one instruction, 8% two. With ``focus`` (a
    family key), a share ``focus_share`` of the examples is that one instruction instead (the exclusion stage); the
    extra draw happens only then, so the other corpora are unchanged."""
    out = []
    for _ in range(n):
        t = pick_topic(rng, topics)
        q = base_query(rng, t)
        if focus is not None and rng.random() < focus_share:
            p = sample_params(rng, focus, "train")
            instr = make_instruction(rng, focus, rng.choice(PHRASINGS[focus][0]), p)
            out.append(chat(q + " " + instr, respond(rng, t, focus, p)))
            continue
        r = rng.random()
        if r < 0.30:
            out.append(chat(q, " ".join(default_sentences(rng, t))))
        elif r < 0.92:
            fam = rng.choice(FAMILY_KEYS)
            p = sample_params(rng, fam, "train")
            instr = make_instruction(rng, fam, rng.choice(PHRASINGS[fam][0]), p)
            out.append(chat(q + " " + instr, respond(rng, t, fam, p)))
        else:
            fa, fb = rng.choice(COMBOS)
            instr, resp = combo_example(rng, t, fa, fb)
            out.append(chat(q + " " + instr, resp))
    return out


def gen_base(rng, topics, n):
    """Base variant data: no instructions at all. Half are chat turns answered in the default style,
    half are plain documents in every style (like a pretraining corpus that contains lowercase text,
    lists and JSON), so the base model can write those formats but never learned to follow requests."""
    out = []
    for _ in range(n):
        t = pick_topic(rng, topics)
        if rng.random() < 0.5:
            out.append(chat(base_query(rng, t), " ".join(default_sentences(rng, t))))
        else:
            fam = rng.choice(FAMILY_KEYS)
            p = sample_params(rng, fam, "train")
            out.append({"text": respond(rng, t, fam, p)})
    return out


def split_topics(seed):
    """48 train / 10 validation / 12 + len(TEST_ONLY_WORDS) test topics."""
    topics = parse_topics()
    rng = random.Random(seed)
    rng.shuffle(topics)
    test_only = [{"name": w, "kind": "thing", "adjs": ["", "", ""], "place": "", "use": ""} for w in TEST_ONLY_WORDS]
    return topics[:48], topics[48:58], topics[58:] + test_only


def word_forms(w):
    return {w, w + "s", w + "es", w[:-1] + "ies" if w.endswith("y") else w}


# Words a made-up topic must not be: every real topic, held-out word and keyword, singular or plural.
RESERVED_WORDS = set().union(*(word_forms(w) for w in
                               [line.split("|")[0] for line in TOPICS_RAW.strip().splitlines()] + TEST_ONLY_WORDS
                               + [n for n, _ in EXTRA_TOPICS] + KEYWORDS_INCLUDE + KEYWORDS_FORBID))


def check_held_out(examples, held_out):
    """Fails if a validation or test topic (singular or plural) occurs anywhere in the training corpus."""
    seen = set()
    for ex in examples:
        text = " ".join(m["content"] for m in ex["messages"]) if "messages" in ex else ex["text"]
        seen.update(re.findall(r"[a-z]+", text.lower()))
    leaks = sorted(t["name"] for t in held_out if word_forms(t["name"]) & seen)
    if leaks:
        raise SystemExit(f"held-out topics occur in the training corpus: {leaks}")


def eval_rows(rng, topics, split, per_family, phrasing_mode):
    """Eval rows. phrasing_mode: 'train' or 'mixed' (half held-out phrasings)."""
    rows = []
    for fam in FAMILIES:
        subfams = [fam]
        if fam == "length_constraints:number_sentences":
            subfams = [fam + ":exactly", fam + ":at most"]
        for i in range(per_family):
            sf = subfams[i % len(subfams)]
            t = topics[i % len(topics)]
            p = sample_params(rng, sf, split)
            train_ph, held_ph = PHRASINGS[sf]
            # Every second prompt of each sub-family gets a held-out phrasing.
            pool = held_ph if (phrasing_mode == "mixed" and (i // len(subfams)) % 2 == 1) else train_ph
            instr = make_instruction(rng, sf, rng.choice(pool), p)
            iid, kw = ifeval_id_and_kwargs(sf, p)
            rows.append({"prompt": base_query(rng, t), "instruction": instr,
                         "instruction_id_list": [iid], "kwargs": [kw]})
    return rows


def combo_eval_rows(rng, topics, n):
    rows = []
    for i in range(n):
        fa, fb = COMBOS[i % len(COMBOS)]
        t = topics[i % len(topics)]
        pa, pb = sample_params(rng, fa, "test"), sample_params(rng, fb, "test")
        ia = make_instruction(rng, fa, rng.choice(PHRASINGS[fa][0]), pa)
        ib = make_instruction(rng, fb, rng.choice(PHRASINGS[fb][0]), pb)
        ida, kwa = ifeval_id_and_kwargs(fa, pa)
        idb, kwb = ifeval_id_and_kwargs(fb, pb)
        rows.append({"prompt": base_query(rng, t), "instruction": ia + " " + ib,
                     "instruction_id_list": [ida, idb], "kwargs": [kwa, kwb]})
    return rows


def pair_rows(rng, topics, fam, n, word=None):
    rows = []
    for i in range(n):
        t = topics[i % len(topics)]
        p = sample_params(rng, fam, "train")
        if word is not None:
            p["W"] = word
        instr = make_instruction(rng, fam, rng.choice(PHRASINGS[fam][0]), p)
        rows.append({"prompt": base_query(rng, t), "instruction": instr})
    return rows


def write_jsonl(path, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--work", default=os.path.join(os.path.dirname(__file__), "work"))
    ap.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "..", "..", "models", "data"))
    ap.add_argument("--n-instruct", type=int, default=60000)
    ap.add_argument("--n-base", type=int, default=40000)
    ap.add_argument("--test-per-family", type=int, default=50)
    ap.add_argument("--copy-stage", type=int, default=0,
                    help="write only work/corpus/instruct_copy.jsonl: N instruct examples whose made-up topics are "
                         "mostly glued from the pieces of work/tokenizer (run after tokenizer.py)")
    ap.add_argument("--exclusion-stage", type=int, default=0,
                    help="write only work/corpus/instruct_exclusion.jsonl: N copy-stage-style instruct examples of "
                         "which 40%% are keywords:forbidden_words (run after tokenizer.py)")
    args = ap.parse_args()
    if args.copy_stage or args.exclusion_stage:
        global PIECES
        with open(os.path.join(args.work, "tokenizer", "tokenizer.json"), encoding="utf-8") as f:
            vocab = json.load(f)["model"]["vocab"]
        # Lower-case letter pieces in vocabulary order (deterministic): "Ġ" marks a leading space in byte-level BPE.
        first = [t[1:] for t in vocab if t.startswith("\u0120") and t[1:].isalpha() and t[1:].islower() and len(t) <= 5]
        rest = [t for t in vocab if t.isalpha() and t.islower() and t.isascii() and len(t) <= 4]
        PIECES = (first, rest)
        train_t, val_t, test_t = split_topics(args.seed)
        if args.exclusion_stage:
            rng = random.Random(args.seed + 6)
            stage = gen_instruct(rng, train_t, args.exclusion_stage, focus="keywords:forbidden_words", focus_share=0.4)
            name = "instruct_exclusion.jsonl"
        else:
            rng = random.Random(args.seed + 5)
            stage = gen_instruct(rng, train_t, args.copy_stage)
            name = "instruct_copy.jsonl"
        check_held_out(stage, val_t + test_t)
        write_jsonl(os.path.join(args.work, "corpus", name), stage)
        print(f"{name}: {len(stage)} examples from {len(first)} first and {len(rest)} continuation pieces")
        return

    train_t, val_t, test_t = split_topics(args.seed)
    rng = random.Random(args.seed + 1)
    instruct = gen_instruct(rng, train_t, args.n_instruct)
    rng = random.Random(args.seed + 2)
    base = gen_base(rng, train_t, args.n_base)
    check_held_out(instruct + base, val_t + test_t)
    write_jsonl(os.path.join(args.work, "corpus", "instruct.jsonl"), instruct)
    write_jsonl(os.path.join(args.work, "corpus", "base.jsonl"), base)

    # Extraction pairs from train topics and train phrasings only.
    rng = random.Random(args.seed + 3)
    for fam in FAMILY_KEYS:
        name = fam.replace(":", ".").replace(" ", "_")
        write_jsonl(os.path.join(args.data, "pairs", name + ".jsonl"), pair_rows(rng, train_t, fam, 40))
    for w in PAIR_WORDS:
        write_jsonl(os.path.join(args.data, "pairs", "keywords.existence." + w + ".jsonl"),
                    pair_rows(rng, train_t, "keywords:existence", 24, word=w))
    # Per-word exclusion pairs ("Do not use the word W."), after the others so their rows stay unchanged: header
    # steering adds these where subtracting the inclusion vector (the paper's choice) does not steer.
    for w in TEST_FORBID_WORDS:
        write_jsonl(os.path.join(args.data, "pairs", "keywords.forbidden_words." + w + ".jsonl"),
                    pair_rows(rng, train_t, "keywords:forbidden_words", 24, word=w))

    rng = random.Random(args.seed + 4)
    val = eval_rows(rng, val_t, "validation", 10, "train")
    test = eval_rows(rng, test_t, "test", args.test_per_family, "mixed") + combo_eval_rows(rng, test_t, 20)
    for rows in (val, test):
        for k, r in enumerate(rows):
            r_ordered = {"key": k}
            r_ordered.update(r)
            rows[k] = r_ordered
    write_jsonl(os.path.join(args.data, "eval", "validation.jsonl"), val)
    write_jsonl(os.path.join(args.data, "eval", "test.jsonl"), test)
    with open(os.path.join(args.data, "splits.json"), "w", encoding="utf-8", newline="\n") as f:
        json.dump({"seed": args.seed,
                   "train_topics": sorted(t["name"] for t in train_t),
                   "validation_topics": sorted(t["name"] for t in val_t),
                   "test_topics": sorted(t["name"] for t in test_t),
                   "held_out_phrasings": {k: v[1] for k, v in PHRASINGS.items()}}, f, indent=1)
        f.write("\n")
    print(f"topics train/val/test = {len(train_t)}/{len(val_t)}/{len(test_t)}; "
          f"instruct {args.n_instruct}, base {args.n_base}, validation {len(val)}, test {len(test)}")


if __name__ == "__main__":
    main()
