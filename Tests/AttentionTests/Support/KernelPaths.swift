import CAttention

/// The micro-kernel paths this CPU can run ("avx512", "avx2", "neon", "portable").
let supportedKernelPaths: [String] = ["avx512", "avx2", "neon", "portable"].filter { attn_kernel_path_supported($0) != 0 }

/// Runs `body` once on every supported micro-kernel path, then restores the
/// process's default path. XCTest runs test methods one at a time, so switching
/// the global path here does not race with other tests.
func forEachKernelPath(_ body: (String) throws -> Void) rethrows {
    let original = String(cString: attn_kernel_path())
    defer { _ = attn_select_kernel_path(original) }
    for path in supportedKernelPaths {
        _ = attn_select_kernel_path(path)
        try body(path)
    }
}
