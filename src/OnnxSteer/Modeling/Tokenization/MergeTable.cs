using System.Runtime.CompilerServices;

namespace OnnxSteer.Modeling.Tokenization;

/// <summary>A BPE model's merges: (left id, right id) to (rank, merged id), in one open-addressing array.</summary>
/// <remarks>It replaces a <c>Dictionary&lt;long, BpeMerge&gt;</c> for two reasons found profiling the load of a 61k-merge
/// Llama tokenizer.json (issue 12): <c>long.GetHashCode</c> is <c>(int)key ^ (int)(key &gt;&gt; 32)</c>, so a pair key
/// hashed to <c>left ^ right</c>, under 2^15 for a 32k vocabulary, and 61k merges shared those values in bucket chains;
/// and the dictionary's code for this struct is generic code no precompiled image holds, so the first loads of a process
/// ran it unoptimised. Here the key is mixed by a multiply (by a per-process random odd number), a slot holds key and
/// value in 16 bytes (one cache line read per probe, no chains), and the load-time insert is compiled optimised at once.
/// (The old dictionary's <c>left ^ right</c> also let a file collide all its pairs at will: a quadratic load.)</remarks>
internal sealed class MergeTable
{
    // Key + 1 is stored, so the zeroed array is the empty table (ids are 0..MaxTokenId, so keys are never -1).
    private struct Slot { public long Key; public int Rank; public int Id; }

    private Slot[] _slots;
    private int _count;

    /// <summary>A table sized for <paramref name="capacity"/> merges without growing (more still fit).</summary>
    public MergeTable(int capacity = 0) => _slots = new Slot[SlotsFor(Math.Max(capacity, 8))];

    /// <summary>The number of distinct pairs.</summary>
    public int Count => _count;

    // Load factor at most 3/4: a miss walks a short run; any slot count works (the hash is reduced by a multiply).
    private static int SlotsFor(int count) => (int)Math.Min((long)count * 4 / 3 + 1, Array.MaxLength);

    /// <summary>The hash multiplier: random per process (odd, top bit set), because the pairs come from an untrusted file.
    /// A fixed multiplier lets a file pick pairs whose keys differ by a value the multiplier maps near zero (a convergent of
    /// its continued fraction), which all land in one run of slots and make the load quadratic; with an unknown one they
    /// cannot be picked.</summary>
    private static readonly ulong Multiplier = (ulong)Random.Shared.NextInt64() | 1UL | (1UL << 63);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int Home(long stored, int length) =>
        (int)(((ulong)(uint)(((ulong)stored * Multiplier) >> 32) * (ulong)(uint)length) >> 32);

    /// <summary>Sets the merge of (<paramref name="left"/>, <paramref name="right"/>); a pair given again keeps the later
    /// value, as Hugging Face's table does.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public void Set(int left, int right, int rank, int id)
    {
        if ((long)(_count + 1) * 4 > (long)_slots.Length * 3) Grow();
        long stored = TokenizerFile.PairKey(left, right) + 1;
        var slots = _slots;
        int i = Home(stored, slots.Length);
        while (true)
        {
            ref var slot = ref slots[i];
            if (slot.Key == stored) { slot.Rank = rank; slot.Id = id; return; }
            if (slot.Key == 0)
            {
                slot.Key = stored; slot.Rank = rank; slot.Id = id;
                _count++;
                return;
            }
            if (++i == slots.Length) i = 0;
        }
    }

    /// <summary>The merge of (<paramref name="left"/>, <paramref name="right"/>), if there is one.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TryGetValue(int left, int right, out BpeMerge merge)
    {
        long stored = TokenizerFile.PairKey(left, right) + 1;
        var slots = _slots;
        int i = Home(stored, slots.Length);
        while (true)
        {
            ref var slot = ref slots[i];
            if (slot.Key == stored) { merge = new BpeMerge(slot.Rank, slot.Id); return true; }
            if (slot.Key == 0) { merge = default; return false; }
            if (++i == slots.Length) i = 0;
        }
    }

    /// <summary>Every (left, right) pair and its merge, in no particular order (for tests and diagnostics).</summary>
    internal IEnumerable<(int Left, int Right, BpeMerge Merge)> Entries()
    {
        foreach (var slot in _slots)
            if (slot.Key != 0)
            {
                long key = slot.Key - 1;
                yield return ((int)(key >> 32), (int)(uint)key, new BpeMerge(slot.Rank, slot.Id));
            }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void Grow()
    {
        var old = _slots;
        _slots = new Slot[SlotsFor(Math.Max(_count * 2, 8))];
        _count = 0;
        foreach (var slot in old)
            if (slot.Key != 0)
            {
                long key = slot.Key - 1;
                Set((int)(key >> 32), (int)(uint)key, slot.Rank, slot.Id);
            }
    }
}
