import XCTest
@testable import Attention

/// An `ATTENTION_*` variable with a value the library cannot use is neither
/// ignored silently nor fatal: one line on stderr names the variable, the value,
/// what is accepted and what is used instead, once per process, and the run goes on.
final class EnvironmentWarningTests: XCTestCase {
    /// `attention --help` reads the kernel path, the driver and the idle wait (it prints them).
    private func help(_ environment: [String: String]) throws -> AttentionRun {
        let run = try runProcess(try attentionExecutable().path, ["--help"], environment: environment)
        XCTAssertEqual(run.status, 0, run.standardError)
        return run
    }

    private func warnings(_ run: AttentionRun) -> [String] {
        run.standardError.split(separator: "\n").map(String.init).filter { $0.hasPrefix("attention: ignoring ") }
    }

    func testEachUnknownValueWarnsOnceWithTheAcceptedValuesAndTheDefault() throws {
        let run = try help(["ATTENTION_THREADING": "omp", "ATTENTION_IDLE_WAIT": "spinn", "ATTENTION_KERNEL_PATH": "avx513"])
        let lines = warnings(run)
        XCTAssertEqual(lines.count, 3, run.standardError)
        let defaultDriver = AttentionThreading.isOpenMPAvailable ? "openmp" : "dispatch"
        XCTAssertTrue(lines.contains("attention: ignoring ATTENTION_THREADING=\"omp\": expected openmp or dispatch; using \(defaultDriver)"),
                      "\(lines)")
        XCTAssertTrue(lines.contains("attention: ignoring ATTENTION_IDLE_WAIT=\"spinn\": expected spin, sleep or runtime; using sleep"),
                      "\(lines)")
        XCTAssertTrue(lines.contains { $0.hasPrefix("attention: ignoring ATTENTION_KERNEL_PATH=\"avx513\": expected avx512, avx2, neon or portable; using ") },
                      "\(lines)")
        // The defaults are in force.
        XCTAssertTrue(run.standardOutput.contains("idle threads: sleep"), run.standardOutput)
    }

    func testAPathThisCPUCannotRunNamesThePathsItCan() throws {
        #if arch(x86_64)
        let foreign = "neon"
        #else
        let foreign = "avx2"
        #endif
        let lines = warnings(try help(["ATTENTION_KERNEL_PATH": foreign]))
        XCTAssertEqual(lines.count, 1, "\(lines)")
        XCTAssertTrue(lines[0].hasPrefix("attention: ignoring ATTENTION_KERNEL_PATH=\"\(foreign)\": this CPU cannot run it (it can run "),
                      lines[0])
        XCTAssertTrue(lines[0].contains("portable)"), lines[0])
    }

    func testKMPBlocktimeIsTheFallbackOfAnUnknownIdleWait() throws {
        let lines = warnings(try help(["ATTENTION_IDLE_WAIT": "never", "KMP_BLOCKTIME": "0"]))
        XCTAssertEqual(lines, ["attention: ignoring ATTENTION_IDLE_WAIT=\"never\": expected spin, sleep or runtime; using runtime (KMP_BLOCKTIME is set)"])
    }

    /// A huge or binary value cannot flood or corrupt the terminal: the
    /// warning shows its first 40 bytes, printable ASCII as is, `"` and `\`
    /// escaped, other bytes as \xNN, then the full length — in the C target's
    /// warnings and the Swift module's alike.
    func testAHugeOrBinaryValueIsShownTruncatedAndEscaped() throws {
        let binary = "sp\u{1B}[2J\"\\\nn\u{7F}é"
        let long = String(repeating: "z", count: 5000)
        let run = try help(["ATTENTION_IDLE_WAIT": binary, "ATTENTION_THREADING": long])
        let lines = warnings(run)
        XCTAssertEqual(lines.count, 2, run.standardError)
        XCTAssertTrue(lines.contains(#"attention: ignoring ATTENTION_IDLE_WAIT="sp\x1b[2J\"\\\x0an\x7f\xc3\xa9": expected spin, sleep or runtime; using sleep"#),
                      "\(lines)")
        XCTAssertTrue(lines.contains { $0.hasPrefix("attention: ignoring ATTENTION_THREADING=\"\(String(repeating: "z", count: 40))\"... (5000 bytes): expected openmp or dispatch; using ") },
                      "\(lines)")
        XCTAssertFalse(run.standardError.contains("\u{1B}"), run.standardError)
        XCTAssertLessThan(run.standardError.utf8.count, 1000, run.standardError)
    }

    func testAcceptedAndEmptyValuesAreSilent() throws {
        for environment in [["ATTENTION_THREADING": "dispatch", "ATTENTION_IDLE_WAIT": "spin", "ATTENTION_KERNEL_PATH": "portable"],
                            ["ATTENTION_THREADING": "", "ATTENTION_IDLE_WAIT": "", "ATTENTION_KERNEL_PATH": ""]] {
            let run = try help(environment)
            XCTAssertEqual(warnings(run), [], "\(environment): \(run.standardError)")
        }
        XCTAssertTrue(try help(["ATTENTION_KERNEL_PATH": "portable"]).standardOutput.contains("Kernel path: portable"))
    }
}
