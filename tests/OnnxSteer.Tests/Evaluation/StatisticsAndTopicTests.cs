using OnnxSteer.Evaluation;

namespace OnnxSteer.Tests.Evaluation;

/// <summary>Wilson intervals, McNemar's exact test, topic fidelity, and the one quality guard of eval, sweep and demo.</summary>
public sealed class StatisticsAndTopicTests
{
    [Theory]
    // Reference values: statsmodels proportion_confint(method="wilson") / R binom.confint(method="wilson").
    [InlineData(0, 10, 0.0, 0.2775)]
    [InlineData(10, 10, 0.7225, 1.0)]
    [InlineData(5, 10, 0.2366, 0.7634)]
    [InlineData(1, 14, 0.0127, 0.3147)]
    [InlineData(81, 100, 0.7222, 0.8749)]
    public void WilsonIntervalsMatchReferenceValues(int k, int n, double low, double high)
    {
        var (l, h) = Statistics.Wilson(k, n);
        Assert.Equal(low, l, 3);
        Assert.Equal(high, h, 3);
    }

    [Fact]
    public void WilsonOfNothingIsEverything()
    {
        Assert.Equal((0.0, 1.0), Statistics.Wilson(0, 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => Statistics.Wilson(3, 2));
    }

    [Theory]
    // Two-sided exact binomial test on the discordant pairs (R: binom.test(min, b + c)$p.value).
    [InlineData(0, 0, 1.0)]
    [InlineData(0, 3, 0.25)]
    [InlineData(0, 5, 0.0625)]
    [InlineData(1, 9, 0.021484375)]
    [InlineData(5, 5, 1.0)]
    [InlineData(2, 8, 0.109375)]
    public void McNemarExactMatchesTheBinomialTest(int b, int c, double p)
    {
        Assert.Equal(p, Statistics.McNemarExact(b, c), 9);
        Assert.Equal(p, Statistics.McNemarExact(c, b), 9);
    }

    [Fact]
    public void McNemarPairsOutcomesAndStaysFiniteForLargeCounts()
    {
        // Pairs: (F,T) x3, (T,T) x2 (concordant, ignored), (T,F) x0.
        Assert.Equal(0.25, Statistics.McNemarExact([false, false, false, true, true], [true, true, true, true, true]), 9);
        var p = Statistics.McNemarExact(0, 2000);
        Assert.True(p >= 0 && p < 1e-100, p.ToString());
        Assert.Throws<ArgumentException>(() => Statistics.McNemarExact([true], [true, false]));
    }

    [Theory]
    [InlineData("Can you tell me something about the honey?", "honey")]
    [InlineData("Explain what an egg is.", "egg")]
    [InlineData("Describe the Forest.", "forest")]
    [InlineData("Write a few words about the bicycle.", "bicycle")]
    [InlineData("Hello there.", null)]
    public void TheTopicIsTheQuerysLastNoun(string prompt, string? topic) => Assert.Equal(topic, TopicFidelity.TopicOf(prompt));

    [Theory]
    [InlineData("Honey is sweet.", "honey", true)]
    [InlineData("EGGS ARE WHITE", "egg", true)]
    [InlineData("the berries are red", "berry", true)]
    [InlineData("A camera is a machine that takes pictures.", "honey", false)]
    [InlineData("Honeycomb is made by bees.", "honey", false)] // a longer word is not the topic
    [InlineData("", "egg", false)]
    public void AnswersNameTheTopicAsAWord(string text, string topic, bool names) => Assert.Equal(names, TopicFidelity.Names(text, topic));

    private static EvalItem Item(string id, string prompt, string kwargs = "{}") =>
        EvaluationTests.Items($$"""{"key": "k", "prompt": "{{prompt}}", "instruction": "x", "instruction_id_list": ["{{id}}"], "kwargs": [{{kwargs}}]}""")[0];

    [Fact]
    public void OffTopicAndDegenerateAnswersFailEveryCheck()
    {
        var guard = new QualityGuard();
        var lower = Item(InstructionIds.Lowercase, "Tell me about the honey.");
        Assert.True(guard.Passes(lower, lower.Checks[0], "honey is made by bees."));
        Assert.False(guard.Passes(lower, lower.Checks[0], "a camera is a machine.")); // lowercase, but about a camera
        Assert.True(new QualityGuard { RequireTopic = false }.Passes(lower, lower.Checks[0], "a camera is a machine."));

        var forbidden = Item(InstructionIds.ForbiddenWords, "Tell me about the honey.", """{"forbidden_words": ["sweet"]}""");
        Assert.False(guard.Passes(forbidden, forbidden.Checks[0], new string('A', 96))); // no forbidden word, but a token loop
        Assert.False(guard.Passes(forbidden, forbidden.Checks[0], "honey is sweet."));
        Assert.True(guard.Passes(forbidden, forbidden.Checks[0], "honey is made by bees."));

        // Forbidding the topic word itself waives the topic requirement: the instruction asks not to name it.
        var topicForbidden = Item(InstructionIds.ForbiddenWords, "Tell me about the honey.", """{"forbidden_words": ["honey"]}""");
        Assert.True(guard.Passes(topicForbidden, topicForbidden.Checks[0], "It is made by bees."));
    }

    [Fact]
    public void TitlesMustNameTheTopic()
    {
        var guard = new QualityGuard();
        var title = Item(InstructionIds.Title, "Describe the sock.");
        Assert.False(guard.Passes(title, title.Checks[0], "<<The Flower>> A sock is warm."));
        Assert.True(guard.Passes(title, title.Checks[0], "<<My Socks>> A sock is warm."));
        Assert.False(guard.Passes(title, title.Checks[0], "A sock is warm."));
    }
}
