using OnnxSteer.Evaluation;

namespace OnnxSteer.Tests.Evaluation;

public class CheckerTests
{
    private static InstructionCheck C(string id, InstructionArgs? args = null) => InstructionCheck.Create(id, args);

    [Theory]
    [InlineData("the river runs to the sea.", true)]
    [InlineData("the river runs to the sea. 42!", true)]
    [InlineData("The river runs to the sea.", false)]
    [InlineData("the river runs to the SEA.", false)]
    [InlineData("123 456 !!!", false)] // Python islower(): no cased character -> False
    [InlineData("ünïcode lower", true)]
    public void Lowercase(string response, bool expected) =>
        Assert.Equal(expected, C(InstructionIds.Lowercase).IsFollowedBy(response));

    [Theory]
    [InlineData("THE RIVER RUNS TO THE SEA.", true)]
    [InlineData("THE RIVER, 2024!", true)]
    [InlineData("THE RIVER RUNs", false)]
    [InlineData("2024 !!!", false)]
    public void Capital(string response, bool expected) =>
        Assert.Equal(expected, C(InstructionIds.Capital).IsFollowedBy(response));

    [Theory]
    [InlineData("{\"topic\": \"rivers\", \"answer\": \"They flow.\"}", true)]
    [InlineData("```json\n{\"a\": 1}\n```", true)]
    [InlineData("```JSON\n[1, 2, 3]\n```", true)]
    [InlineData("```\n{\"a\": 1}\n```", true)]
    [InlineData("  {\"a\": [true, null]}  ", true)]
    [InlineData("\"just a string\"", true)] // json.loads accepts any JSON value
    [InlineData("{\"a\": 1,}", false)]
    [InlineData("{'a': 1}", false)]
    [InlineData("Here is JSON: {\"a\": 1}", false)]
    [InlineData("```json\n{\"a\": 1}", true)] // a missing closing fence is fine: only the prefix is removed
    [InlineData("", false)]
    public void Json(string response, bool expected) =>
        Assert.Equal(expected, C(InstructionIds.Json).IsFollowedBy(response));

    [Theory]
    [InlineData("* one\n* two\n* three", 3, true)]
    [InlineData("- one\n- two\n- three", 3, true)]
    [InlineData("* one\n- two\n  * three", 3, true)]
    [InlineData("Intro line.\n* one\n* two", 2, true)]
    [InlineData("* one\n* two", 3, false)]
    [InlineData("* one\n* two\n* three\n* four", 3, false)]
    [InlineData("** bold line\n* one", 1, true)] // "**" does not start a bullet
    [InlineData("1. one\n2. two", 2, false)]
    public void Bullets(string response, int n, bool expected) =>
        Assert.Equal(expected, C(InstructionIds.BulletLists, new InstructionArgs { NumBullets = n }).IsFollowedBy(response));

    [Theory]
    [InlineData("<<The River>>\nRivers flow to the sea.", true)]
    [InlineData("Rivers flow. <<a title in the middle>> ok", true)]
    [InlineData("<< >>\nRivers flow.", false)]
    [InlineData("<<>> nothing", false)]
    [InlineData("<The River>", false)]
    [InlineData("<<broken\ntitle>>", false)]
    public void Title(string response, bool expected) =>
        Assert.Equal(expected, C(InstructionIds.Title).IsFollowedBy(response));

    [Theory]
    [InlineData("Rivers flow. Is there anything else I can help with?", true)]
    [InlineData("Rivers flow. is there anything else i can help with?  \n", true)]
    [InlineData("\"Rivers flow. Is there anything else I can help with?\"", true)] // IFEval strips quotes
    [InlineData("Rivers flow. Is there anything else I can help with? Bye.", false)]
    public void EndChecker(string response, bool expected) =>
        Assert.Equal(expected, C(InstructionIds.EndChecker, new InstructionArgs { EndPhrase = "Is there anything else I can help with?" }).IsFollowedBy(response));

    [Theory]
    [InlineData("\"Rivers flow to the sea.\"", true)]
    [InlineData("  \"Rivers flow.\"\n", true)]
    [InlineData("\"", false)]
    [InlineData("\"Rivers flow.", false)]
    [InlineData("Rivers \"flow\".", false)]
    public void Quotation(string response, bool expected) =>
        Assert.Equal(expected, C(InstructionIds.Quotation).IsFollowedBy(response));

    [Theory]
    [InlineData("Rivers flow to the sea and feed the land.", true)]
    [InlineData("Rivers flow, and feed the land.", false)]
    public void NoComma(string response, bool expected) =>
        Assert.Equal(expected, C(InstructionIds.NoComma).IsFollowedBy(response));

    [Theory]
    [InlineData("", 0)]
    [InlineData("   ", 0)]
    [InlineData("Rivers flow", 1)]
    [InlineData("Rivers flow.", 1)]
    [InlineData("Rivers flow. They feed the land! Do they end? Yes.", 4)]
    [InlineData("rivers flow. they feed the land.", 2)] // punkt breaks after a plain word even before lowercase
    [InlineData("The pH is 7.5 today. It is fine.", 2)]
    [InlineData("Mr. Smith went home. He slept.", 2)]
    [InlineData("He met J. Smith there.", 1)]
    [InlineData("Wait... what happened. Nothing.", 2)]
    [InlineData("It ended... The next day came.", 2)]
    [InlineData("\"Rivers flow.\" They feed the land.", 2)]
    [InlineData("Visit example.com today.", 1)]
    [InlineData("* one\n* two\n* three", 1)] // line breaks alone do not end sentences
    [InlineData("Really?! Yes.", 2)]
    public void SentenceCount(string text, int expected) => Assert.Equal(expected, SentenceCounter.Count(text));

    [Theory]
    [InlineData("One. Two.", "at most", 2, true)]
    [InlineData("One. Two. Three.", "at most", 2, false)]
    [InlineData("One. Two.", "less than", 2, false)]
    [InlineData("One.", "less than", 2, true)]
    [InlineData("One. Two. Three.", "at least", 3, true)]
    [InlineData("One. Two.", "at least", 3, false)]
    [InlineData("One. Two.", "exactly", 2, true)]
    [InlineData("One. Two. Three.", "exactly", 2, false)]
    [InlineData("One.", "exactly", 2, false)]
    public void NumberSentences(string response, string relation, int n, bool expected) =>
        Assert.Equal(expected, C(InstructionIds.NumberSentences, new InstructionArgs { NumSentences = n, Relation = relation }).IsFollowedBy(response));

    [Theory]
    [InlineData("The Ocean is wide.", true)]
    [InlineData("Oceans are wide.", true)] // IFEval's re.search: a substring counts
    [InlineData("The sea is wide.", false)]
    public void KeywordExistence(string response, bool expected) =>
        Assert.Equal(expected, C(InstructionIds.KeywordExistence, new InstructionArgs { Keywords = ["ocean"] }).IsFollowedBy(response));

    [Fact]
    public void KeywordExistenceNeedsEveryKeyword()
    {
        var check = C(InstructionIds.KeywordExistence, new InstructionArgs { Keywords = ["ocean", "salt"] });
        Assert.True(check.IsFollowedBy("Salt fills the OCEAN."));
        Assert.False(check.IsFollowedBy("The ocean is wide."));
    }

    [Theory]
    [InlineData("The sea is wide.", true)]
    [InlineData("The Ocean is wide.", false)]
    [InlineData("The ocean, wide.", false)]
    [InlineData("Oceans are wide.", true)] // whole words only
    [InlineData("Oceanic trenches.", true)]
    public void ForbiddenWords(string response, bool expected) =>
        Assert.Equal(expected, C(InstructionIds.ForbiddenWords, new InstructionArgs { ForbiddenWords = ["ocean"] }).IsFollowedBy(response));

    [Fact]
    public void ForbiddenWordsWithRegexCharactersAreLiteral()
    {
        var check = C(InstructionIds.ForbiddenWords, new InstructionArgs { ForbiddenWords = ["a.b"] });
        Assert.True(check.IsFollowedBy("axb is fine"));
        Assert.False(check.IsFollowedBy("a.b is not"));
    }

    [Fact]
    public void StrictFailsBlankResponses()
    {
        var check = C(InstructionIds.NoComma);
        Assert.False(IfEval.FollowsStrict(check, "   "));
        Assert.False(IfEval.FollowsLoose(check, ""));
        Assert.True(IfEval.FollowsStrict(check, "No commas here."));
    }

    [Fact]
    public void LooseVariantsFollowIfEvalOrder()
    {
        var v = IfEval.LooseVariants("Sure!\n*body* text\nBye");
        Assert.Equal(8, v.Count);
        Assert.Equal("Sure!\n*body* text\nBye", v[0]);
        Assert.Equal("Sure!\nbody text\nBye", v[1]);
        Assert.Equal("*body* text\nBye", v[2]);
        Assert.Equal("Sure!\n*body* text", v[3]);
        Assert.Equal("*body* text", v[4]);
        Assert.Equal("body text\nBye", v[5]);
        Assert.Equal("Sure!\nbody text", v[6]);
        Assert.Equal("body text", v[7]);
    }

    [Fact]
    public void LooseVariantsOfOneLine()
    {
        var v = IfEval.LooseVariants("one line");
        Assert.Equal(["one line", "one line", "", "", "", "", "", ""], v);
    }

    [Fact]
    public void LooseForgivesAPreambleLine()
    {
        var lower = C(InstructionIds.Lowercase);
        const string response = "Sure, here it is:\nthe river runs to the sea.";
        Assert.False(IfEval.FollowsStrict(lower, response));
        Assert.True(IfEval.FollowsLoose(lower, response));

        var json = C(InstructionIds.Json);
        const string withOutro = "{\"a\": 1}\nHope this helps.";
        Assert.False(IfEval.FollowsStrict(json, withOutro));
        Assert.True(IfEval.FollowsLoose(json, withOutro));
    }

    [Fact]
    public void LooseRemovesAsterisks()
    {
        var end = C(InstructionIds.EndChecker, new InstructionArgs { EndPhrase = "The end." });
        Assert.False(IfEval.FollowsStrict(end, "Rivers flow. **The end.**"));
        Assert.True(IfEval.FollowsLoose(end, "Rivers flow. **The end.**"));
    }

    [Fact]
    public void LooseDoesNotRescueEverything()
    {
        var comma = C(InstructionIds.NoComma);
        Assert.False(IfEval.FollowsLoose(comma, "a, b\nc, d\ne, f"));
    }

    [Theory]
    [InlineData("detectable_format:number_bullet_lists", "num_bullets")]
    [InlineData("startend:end_checker", "end_phrase")]
    [InlineData("length_constraints:number_sentences", "num_sentences")]
    [InlineData("keywords:existence", "keywords")]
    [InlineData("keywords:forbidden_words", "forbidden_words")]
    public void MissingArgumentsAreInvalidData(string id, string arg)
    {
        var e = Assert.Throws<OnnxSteerException>(() => InstructionCheck.Create(id));
        Assert.Equal(ErrorKind.InvalidData, e.Kind);
        Assert.Contains(arg, e.Message);
    }

    [Fact]
    public void UnknownRelationAndIdAreInvalidData()
    {
        var e = Assert.Throws<OnnxSteerException>(() =>
            InstructionCheck.Create(InstructionIds.NumberSentences, new InstructionArgs { NumSentences = 2, Relation = "around" }));
        Assert.Contains("around", e.Message);
        e = Assert.Throws<OnnxSteerException>(() => InstructionCheck.Create("detectable_format:haiku"));
        Assert.Equal(ErrorKind.InvalidData, e.Kind);
        Assert.Contains("haiku", e.Message);
    }

    [Fact]
    public void FamiliesDecideModes()
    {
        Assert.Equal(InstructionFamily.Format, InstructionIds.FamilyOf(InstructionIds.Lowercase));
        Assert.Equal(InstructionFamily.Format, InstructionIds.FamilyOf(InstructionIds.Quotation));
        Assert.Equal(InstructionFamily.Length, InstructionIds.FamilyOf(InstructionIds.NumberSentences));
        Assert.Equal(InstructionFamily.WordInclusion, InstructionIds.FamilyOf(InstructionIds.KeywordExistence));
        Assert.Equal(InstructionFamily.WordExclusion, InstructionIds.FamilyOf(InstructionIds.ForbiddenWords));
    }
}
