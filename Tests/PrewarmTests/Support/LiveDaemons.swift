import Testing

/// The suites that run real daemons and real processes, one test at a time: they share the
/// machine's two cores, and the timing-sensitive ones (the advice replayed on a live pool,
/// the memory bursts, the benchmarks) must not run beside each other. Unit suites run in
/// parallel with them.
@Suite(.serialized) enum LiveDaemons {}
