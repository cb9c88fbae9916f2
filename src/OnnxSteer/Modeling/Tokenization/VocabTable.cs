using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace OnnxSteer.Modeling.Tokenization;

/// <summary>A BPE vocabulary: token text to id, looked up by string or by a span of characters, and the id table
/// (id to token) built as tokens are added.</summary>
/// <remarks>It replaces a <c>Dictionary&lt;string, int&gt;</c> (issue 12): resolving a 61k-merge Llama tokenizer.json
/// looks the vocabulary up three times per merge, and the dictionary's span lookup went through its buckets, its entries
/// and two interface calls to the comparer, in generic code that ran unoptimised in the first loads of a process. Here
/// one open-addressing array holds each token's string, hash and id (one probe reads one slot; the string is read only
/// when the hash matches), and every method the load calls is compiled optimised at once (not left to tiering, which runs a process's first loads
/// unoptimised).
/// <para>The file is untrusted, so the hash cannot be one its author can collide at will: tokens are hashed with a
/// fast fixed function while every token sits within <see cref="MaxProbes"/> slots of its home, and the table switches to
/// the runtime's per-process randomised string hash (and rebuilds) the first time one does not. Lookups stop after the
/// longest probe an insert made, so a crafted cluster cannot make a missing token walk the table.</para></remarks>
internal sealed class VocabTable
{
    private struct Slot { public string? Token; public int Hash; public int Id; }

    /// <summary>Probes an insert may take before the table takes the randomised hash (far above what a fixed hash gives
    /// real vocabularies at this load factor: runs of a few tens at most).</summary>
    private const int MaxProbes = 128;

    private readonly int _maxProbes;

    private Slot[] _slots;
    private int _count;
    private int _longestProbe;
    private bool _randomized;
    private string[] _byId;
    private int _maxId = -1;
    private (int Id, string First, string Second)? _idConflict;

    /// <summary>A table sized for <paramref name="capacity"/> tokens without growing (more still fit).</summary>
    public VocabTable(int capacity = 0) : this(capacity, MaxProbes) { }

    /// <summary>A table whose fixed hash gives way after <paramref name="maxProbes"/> probes (tests force the switch).</summary>
    internal VocabTable(int capacity, int maxProbes)
    {
        _maxProbes = maxProbes;
        capacity = Math.Clamp(capacity, 8, TokenizerFile.MaxTokenId + 1);
        _slots = new Slot[SlotsFor(capacity)];
        _byId = new string[capacity];
    }

    /// <summary>The number of tokens.</summary>
    public int Count => _count;

    /// <summary>Whether the table has given up its fixed hash for the randomised one.</summary>
    internal bool Randomized => _randomized;

    // Load factor at most 2/3; any slot count works (the hash is reduced by a multiply).
    private static int SlotsFor(int count) => (int)Math.Min((long)count * 3 / 2 + 1, Array.MaxLength);

    /// <summary>Adds a token; false (and nothing changed) when the token is already there. Ids are checked by the
    /// caller (0..<see cref="TokenizerFile.MaxTokenId"/>); an id given to a second token is remembered for
    /// <see cref="IdTable"/> to report.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public bool TryAdd(string token, int id)
    {
        if ((long)(_count + 1) * 3 > (long)_slots.Length * 2) Rehash(_slots.Length * 2, _randomized);
        int hash = Hash(token);
        if (!Insert(token, hash, id))
        {
            if (Find(token, hash) >= 0) return false;
            // A run this long under the fixed hash: a crafted file or a very unlucky one; either way, randomise.
            Rehash(_slots.Length, randomized: true);
            Insert(token, Hash(token), id);
        }
        _count++;
        if (id >= _byId.Length)
            Array.Resize(ref _byId, (int)Math.Clamp(Math.Max((long)_byId.Length * 2, id + 1L), 0, TokenizerFile.MaxTokenId + 1));
        if (_byId[id] is { } other) _idConflict ??= (id, other, token);
        else _byId[id] = token;
        if (id > _maxId) _maxId = id;
        return true;
    }

    /// <summary>The id of <paramref name="token"/>, if it is in the vocabulary.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TryGetValue(string token, out int id) => TryGetValue(token.AsSpan(), out id);

    /// <summary>The id of the token spelled by <paramref name="token"/>, if it is in the vocabulary.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public bool TryGetValue(ReadOnlySpan<char> token, out int id)
    {
        int i = Find(token, Hash(token));
        id = i >= 0 ? _slots[i].Id : 0;
        return i >= 0;
    }

    /// <summary>The id table (index = id; ids no token has are null), or an error naming the first id given to two tokens.</summary>
    public string[] IdTable(string path, string where)
    {
        if (_idConflict is var (id, first, second))
            throw TokenizerFile.Invalid(path, $"{where} gives the id {id} to both {TokenizerFile.Quote(first)} and {TokenizerFile.Quote(second)}");
        if (_byId.Length != _maxId + 1) Array.Resize(ref _byId, _maxId + 1);
        return _byId;
    }

    /// <summary>The slot of <paramref name="token"/>, or -1.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private int Find(ReadOnlySpan<char> token, int hash)
    {
        var slots = _slots;
        int i = Home(hash, slots.Length);
        // No token sits further than the longest probe an insert made, so a miss stops there.
        for (int probe = 0; probe <= _longestProbe; probe++)
        {
            ref var slot = ref slots[i];
            if (slot.Token is null) return -1;
            if (slot.Hash == hash && token.SequenceEqual(slot.Token)) return i;
            if (++i == slots.Length) i = 0;
        }
        return -1;
    }

    /// <summary>Puts a token not yet seen (or, found within the probe limit, leaves it: the caller checks) in its slot;
    /// false when neither happened within the probe limit under the fixed hash.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private bool Insert(string token, int hash, int id)
    {
        var slots = _slots;
        int i = Home(hash, slots.Length);
        for (int probe = 0; ; probe++)
        {
            ref var slot = ref slots[i];
            if (slot.Token is null)
            {
                slot.Token = token; slot.Hash = hash; slot.Id = id;
                if (probe > _longestProbe) _longestProbe = probe;
                return true;
            }
            if (slot.Hash == hash && token.AsSpan().SequenceEqual(slot.Token)) return false;
            if (probe >= _maxProbes && !_randomized) return false;
            if (++i == slots.Length) i = 0;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void Rehash(int slotCount, bool randomized)
    {
        var old = _slots;
        bool oldRandomized = _randomized;
        while (true)
        {
            _slots = new Slot[slotCount];
            _randomized = randomized;
            _longestProbe = 0;
            bool placed = true;
            foreach (ref var slot in old.AsSpan())
                if (slot.Token is { } token && !Insert(token, randomized == oldRandomized ? slot.Hash : Hash(token), slot.Id))
                {
                    placed = false;
                    break;
                }
            if (placed) return;
            randomized = true; // only the fixed hash has a probe limit
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int Home(int hash, int length) => (int)(((ulong)(uint)hash * (ulong)(uint)length) >> 32);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private int Hash(ReadOnlySpan<char> token) => _randomized ? string.GetHashCode(token) : FixedHash(token);

    /// <summary>A fast fixed hash of UTF-16 text, four characters per multiply, finished so the high bits (which pick
    /// the slot) depend on every character.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static int FixedHash(ReadOnlySpan<char> token)
    {
        var bytes = MemoryMarshal.AsBytes(token);
        const ulong K = 0x9E3779B97F4A7C15UL;
        ulong h = (ulong)bytes.Length * K;
        while (bytes.Length >= 8)
        {
            h = (h ^ MemoryMarshal.Read<ulong>(bytes)) * K;
            h ^= h >> 29;
            bytes = bytes[8..];
        }
        if (bytes.Length >= 4)
        {
            h = (h ^ MemoryMarshal.Read<uint>(bytes)) * K;
            h ^= h >> 29;
            bytes = bytes[4..];
        }
        if (bytes.Length >= 2) h = (h ^ MemoryMarshal.Read<ushort>(bytes)) * K;
        h ^= h >> 32;
        h *= K;
        return (int)(h >> 32);
    }
}
