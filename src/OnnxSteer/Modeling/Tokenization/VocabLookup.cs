namespace OnnxSteer.Modeling.Tokenization;

/// <summary>Looks a token up in a vocabulary by a span of characters. .NET 9+ does it without allocating through the
/// dictionary's alternate lookup; the library also targets .NET 8, which lacks it, and there a string is made per lookup
/// (tokenizer loading and pre-tokenization only, never the decode loop).</summary>
internal readonly struct VocabLookup
{
#if NET9_0_OR_GREATER
    private readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> _lookup;
    public VocabLookup(Dictionary<string, int> vocab) => _lookup = vocab.GetAlternateLookup<ReadOnlySpan<char>>();
    public bool TryGetValue(ReadOnlySpan<char> key, out int value) => _lookup.TryGetValue(key, out value);
#else
    private readonly Dictionary<string, int> _vocab;
    public VocabLookup(Dictionary<string, int> vocab) => _vocab = vocab;
    public bool TryGetValue(ReadOnlySpan<char> key, out int value) => _vocab.TryGetValue(key.ToString(), out value);
#endif
}
