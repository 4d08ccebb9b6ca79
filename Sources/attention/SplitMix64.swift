import Attention

/// The command's seeded generator is the library's `SplitMix64` (package
/// access), so bench tensors, token streams and `Tensor.randomNormal` share
/// one implementation. The alias lets files of this target that do not import
/// `Attention` (KVStorageBench.swift) name it.
typealias SplitMix64 = Attention.SplitMix64
