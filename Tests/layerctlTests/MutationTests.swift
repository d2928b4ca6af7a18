import Foundation
import Testing

/// Layer files and locks come from strangers, so they are mutated here the ways a careless or
/// hostile hand mutates them: bytes flipped, lines doubled, dropped and swapped, values replaced
/// with hostile ones (huge, empty, nested, binary, anchors, paths). Each mutant is built offline;
/// whatever it is, layerctl ends of itself, not by a signal, and a failure is one line that
/// starts with `layerctl: ` and quotes nothing long. The mutants come from a fixed seed, so a
/// failure names a mutant that the next run makes again.
@Suite("Mutated layer files and locks", .serialized, .enabled(if: Harness.canBuild, Harness.cannotBuildReason))
struct MutationTests {
    /// How many random mutants of each kind a run builds, after the systematic ones.
    static let mutants = 150

    /// Values a mutation puts in place of one, or in a line of its own.
    static let hostile: [String] = [
        "", "~", "null", "[]", "{}", "-1", "0", String(repeating: "9", count: 40), "1e999", "0o7777777", "\"\\0\"", "\u{0}",
        "*a", "&a x", "!!binary AAAA", "!!python/object:os.system", "\t", "\r", String(repeating: "[", count: 300),
        String(repeating: "{", count: 300) + String(repeating: "}", count: 300), "? [a, b]\n: c", "<<: *a",
        "\"" + String(repeating: "a", count: 100_000) + "\"", String(repeating: "a", count: 100_000),
        String(repeating: "/", count: 5000), "../../../../etc/shadow", "/proc/self/mem", "\"\\u202e\"", "\"\\e[31m\"",
        "|\n  multi\n  line", "- - - -", "a: b: c", "%YAML 1.1", "---", "...", "2024-13-45", "\"$(reboot)\"", "\\", "#",
        "..", "/", "image", "scratch", "sha256:", String(repeating: "g", count: 64), "é",
    ]

    /// SplitMix64: the same mutants on every machine.
    struct Random {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        mutating func below(_ n: Int) -> Int { Int(next() % UInt64(max(n, 1))) }
        mutating func pick<T>(_ items: [T]) -> T { items[below(items.count)] }
    }

    /// One to four mutations of `text`, line by line, in bytes (a flip may leave invalid UTF-8).
    static func mutate(_ text: String, _ random: inout Random, words: Bool) -> [UInt8] {
        var lines = text.utf8.split(separator: 0x0A, omittingEmptySubsequences: false).map(Array.init)
        for _ in 0...random.below(4) {
            let i = random.below(lines.count)
            switch random.below(7) {
            case 0 where !lines[i].isEmpty:
                lines[i][random.below(lines[i].count)] = UInt8(random.below(256))
            case 1:
                // A value, or a word of a lock line, replaced.
                let separator: [UInt8] = words ? [0x20] : Array(": ".utf8)
                let parts = lines[i].split(separator: separator[0], omittingEmptySubsequences: false).map(Array.init)
                if parts.count > 1 {
                    var changed = parts
                    changed[words ? random.below(parts.count) : parts.count - 1] = Array(random.pick(hostile).utf8)
                    lines[i] = Array(changed.joined(separator: [separator[0]]))
                } else {
                    lines[i] += Array(random.pick(hostile).utf8)
                }
            case 2: lines.insert(random.pick(lines), at: i)
            case 3 where lines.count > 1: lines.remove(at: i)
            case 4: lines.swapAt(i, random.below(lines.count))
            case 5: lines.insert(Array(random.pick(hostile).utf8), at: i)
            default: lines[i] = Array(repeating: 0x20, count: random.below(8)) + lines[i].drop { $0 == 0x20 }
            }
        }
        return Array(lines.joined(separator: [0x0A]))
    }

    /// Each value of `text` (each word of a lock line, from the second) replaced in turn by a
    /// value of 100,000 bytes, and each value of a layer file by nothing too: the random mutants
    /// rarely hit the one line whose value an error message quotes.
    static func everyValue(_ text: String, words: Bool) -> [[UInt8]] {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        let long = String(repeating: "a", count: 100_000)
        var mutants: [[UInt8]] = []
        for (index, line) in lines.enumerated() where !line.hasPrefix("#") && !line.isEmpty {
            var replaced: [String] = []
            if words {
                let parts = line.split(separator: " ", omittingEmptySubsequences: false).map(String.init)
                for position in parts.indices.dropFirst() {
                    var changed = parts
                    changed[position] = long
                    replaced.append(changed.joined(separator: " "))
                }
            } else if let colon = line.range(of: ": ") {
                for value in [long, ""] { replaced.append(String(line[..<colon.upperBound]) + value) }
            } else if let dash = line.range(of: "- ") {
                replaced.append(String(line[..<dash.upperBound]) + long)
            }
            for mutant in replaced {
                var changed = lines
                changed[index] = mutant
                mutants.append(Array(changed.joined(separator: "\n").utf8))
            }
        }
        return mutants
    }

    /// Builds `file` offline and returns what is wrong with how it ended, or nil.
    static func fault(building file: String, store: String) throws -> String? {
        try fault(of: try Harness.run(["build", file, "--store", store, "--offline", "--locked"]), store: store)
    }

    /// What is wrong with how a command on a stranger's input ended, or nil. It ended of itself,
    /// not by a signal; if it failed, its last line is its one error line, which starts with
    /// `layerctl: ` and is at most 1 KiB; and it left no half layer in `store`'s `tmp/` and no
    /// mount of it.
    static func fault(of result: Harness.Result, store: String) throws -> String? {
        let lines = result.stderr.split(separator: "\n")
        let errors = lines.filter { $0.hasPrefix("layerctl: ") }
        if result.status >= 128 { return "ended by signal \(result.status - 128): \(result.stderr.suffix(300))" }
        if result.status != 0 {
            guard errors.count == 1, lines.last == errors.first else {
                return "status \(result.status), \(errors.count) error lines: \(result.stderr.suffix(300))"
            }
            if errors[0].utf8.count > 1024 { return "a \(errors[0].utf8.count)-byte error line: \(errors[0].prefix(200))…" }
        }
        let left = (try? FileManager.default.contentsOfDirectory(atPath: store + "/tmp")) ?? []
        if !left.isEmpty { return "left in the store's tmp/: \(left)" }
        if try String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8).contains(store) { return "a mount of the store is left" }
        return nil
    }

    @Test("every mutant of a demo layer file ends in one short line of its own, or builds")
    func layerFiles() throws {
        let layers = try Harness.demoLayers()
        let store = try Harness.temporaryDirectory("mutation-store")
        let seeds = try ["base", "nvidia", "gaming", "development"].map {
            try String(contentsOfFile: layers + "/\($0).yaml", encoding: .utf8)
        }
        var random = Random(state: 12)
        var faults: [String] = []
        let systematic = seeds.flatMap { Self.everyValue($0, words: false) }
        for number in 0..<(systematic.count + Self.mutants) {
            let mutant =
                number < systematic.count ? systematic[number] : Self.mutate(seeds[random.below(seeds.count)], &random, words: false)
            // Beside the demo files, so a `from:` still finds its parent.
            let file = layers + "/mutant.yaml"
            try Data(mutant).write(to: URL(fileURLWithPath: file))
            if let fault = try Self.fault(building: file, store: store) {
                try Data(mutant).write(to: URL(fileURLWithPath: layers + "/fault-\(number).yaml"))
                faults.append("mutant \(number) (kept in \(layers)/fault-\(number).yaml): \(fault)")
            }
        }
        #expect(faults.isEmpty, "\(faults.prefix(5).joined(separator: "\n"))")
    }

    @Test("every mutant of a written lock ends in one short line of its own, or builds what the lock pins")
    func locks() throws {
        let layers = try Harness.demoLayers()
        let store = try Harness.temporaryDirectory("mutation-lock-store")
        let locked = try Harness.run(["lock", layers + "/gaming.yaml", "--store", store])
        #expect(locked.status == 0, "\(locked.stderr)")
        let names = ["base", "nvidia", "gaming"]
        let seeds = try names.map { try String(contentsOfFile: layers + "/\($0).lock", encoding: .utf8) }
        var random = Random(state: 34)
        var faults: [String] = []
        let systematic = seeds.indices.flatMap { index in Self.everyValue(seeds[index], words: true).map { (index, $0) } }
        for number in 0..<(systematic.count + Self.mutants) {
            let index = number < systematic.count ? systematic[number].0 : random.below(seeds.count)
            let mutant = number < systematic.count ? systematic[number].1 : Self.mutate(seeds[index], &random, words: true)
            try Data(mutant).write(to: URL(fileURLWithPath: layers + "/\(names[index]).lock"))
            if let fault = try Self.fault(building: layers + "/gaming.yaml", store: store) {
                try Data(mutant).write(to: URL(fileURLWithPath: layers + "/fault-\(number).lock"))
                faults.append("mutant \(number) of \(names[index]).lock (kept in \(layers)/fault-\(number).lock): \(fault)")
            }
            try seeds[index].write(toFile: layers + "/\(names[index]).lock", atomically: false, encoding: .utf8)
        }
        #expect(faults.isEmpty, "\(faults.prefix(5).joined(separator: "\n"))")
    }
}
