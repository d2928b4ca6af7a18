import Foundation
import Glibc
import Testing

/// pacman, the peer, as the oracle of what builds install: random stacks of layers of the demo
/// repository's packages, each layer built by layerctl and the stack exported, must make the tree
/// that `pacman --root` makes of the same transactions one after another (`-S` a layer's
/// `packages:`, `-R` its `remove:`), scriptlets and hooks run. Apart by design: every time (a
/// build clamps them) and the local database's install dates; pacman's sync databases, which a
/// layer keeps none of.
@Suite("pacman as oracle")
struct PacmanOracleTests {
    static let seed = ProcessInfo.processInfo.environment["LAYERCTL_PACMAN_SEED"].flatMap { UInt64($0) } ?? 3
    static let stacks = ProcessInfo.processInfo.environment["LAYERCTL_PACMAN_STACKS"].flatMap { Int($0) } ?? 10

    /// What a layer may install: the demo repository but what breaks on purpose (failing or
    /// chatty scriptlets), makes per-machine state (which the normaliser removes by design), or
    /// clashes (conflict-a's other half, a file of another package, the boot stand-ins).
    static let installable = [
        "glibc", "libxcrypt", "zlib", "perl", "shadow", "demo-data", "demo-lib", "demo-app", "greeter", "hook-recorder",
        "hooked", "capped", "tool-a", "tool-b", "demo-tools", "nano", "nvidia-utils", "game", "confd", "driven",
        "driver-b", "oldtool-user", "newtool", "conflict-a",
    ]
    /// What a layer may remove: packages nothing else of the demo repository needs.
    static let removable = [
        "demo-app", "greeter", "hook-recorder", "hooked", "capped", "tool-a", "tool-b", "nano", "nvidia-utils", "game",
        "confd", "driven", "oldtool-user", "conflict-a",
    ]

    @Test("random stacks of package layers, exported, are the tree pacman --root makes of the same transactions")
    func randomStacks() throws {
        let work = try Harness.temporaryDirectory("pacman-oracle")
        let store = work + "/store"
        // The demo repository, and the same one an upgrade later (`upgrade: true`, `pacman -Syu`).
        for (file, folder) in [("pacman.conf", "repo"), ("pacman-next.conf", "repo-next")] {
            try """
            [options]
            Architecture = x86_64
            SigLevel = Never
            [demo]
            Server = file://\(Harness.demoOut)/\(folder)/$repo
            """.write(toFile: work + "/" + file, atomically: true, encoding: .utf8)
        }
        var random = MutationTests.Random(state: Self.seed)
        var compared: [String: Int] = [:]  // layers compared, by what they did
        var failedAlike: [String] = []
        defer {
            print(
                "pacman as oracle: \(Self.stacks) stacks (seed \(Self.seed)), \(compared.values.reduce(0, +)) layers compared \(compared.sorted { $0.key < $1.key }), \(failedAlike.count) failed in both"
            )
            for failure in failedAlike { print("  failed in both: \(failure)") }
        }
        stacks: for stack in 0..<Self.stacks {
            let root = "\(work)/pacman-\(stack)"
            try FileManager.default.createDirectory(atPath: root + "/var/lib/pacman", withIntermediateDirectories: true)
            var installed: Set<String> = []
            var parent: String?
            var upgraded = false
            for level in 0..<(1 + random.below(4)) {
                let step = level == 0 ? 0 : random.below(4)
                var packages: [String] = []
                var removals: [String] = []
                var text = parent.map { "from: \($0)\n" } ?? ""
                var arguments: [String]
                if step == 3 && !upgraded {
                    // Everything below to what the repository holds an upgrade later.
                    upgraded = true
                    text +=
                        "repos:\n  - name: demo\n    servers: [\(Harness.demoOut)/repo-next/$repo]\n    siglevel: Never\n"
                    text += "upgrade: true\n"
                    arguments = ["-Syu"]
                } else if step == 2 {
                    let candidates = Self.removable.filter { installed.contains($0) }
                    for _ in 0..<(1 + random.below(2)) where !candidates.isEmpty {
                        let name = random.pick(candidates)
                        if !removals.contains(name) { removals.append(name) }
                    }
                    if removals.isEmpty { continue }
                    text += "remove: [\(removals.joined(separator: ", "))]\n"
                    arguments = ["-R"] + removals
                } else {
                    // A root layer holds what a system has at least: the folders and a shell.
                    packages = level == 0 ? ["filesystem", "busybox"] : []
                    for _ in 0..<(1 + random.below(5)) {
                        let name = random.pick(Self.installable + (upgraded ? ["game-addon"] : []))
                        if !installed.contains(name) && !packages.contains(name) { packages.append(name) }
                    }
                    if packages.isEmpty { continue }
                    text =
                        parent == nil
                        ? Harness.demoRoot(packages) : text + "packages: [\(packages.joined(separator: ", "))]\n"
                    arguments = ["-Sy"] + packages
                }
                let name = "s\(stack)-l\(level)"
                try text.write(toFile: "\(work)/\(name).yaml", atomically: true, encoding: .utf8)
                let built = try Harness.run(["build", "\(work)/\(name).yaml", "--store", store])
                let pacman = try KernelMount.run(
                    "/usr/bin/pacman",
                    [
                        "--root", root, "--dbpath", root + "/var/lib/pacman", "--cachedir", "\(work)/cache",
                        "--config", work + (upgraded ? "/pacman-next.conf" : "/pacman.conf"),
                        "--logfile", "\(work)/pacman-\(stack).log", "--noconfirm", "--noprogressbar",
                    ] + arguments)
                let what = "stack \(stack), \(name) (\(text.split(separator: "\n").suffix(2).joined(separator: "; ")))"
                guard built.status == 0, pacman.status == 0 else {
                    #expect(
                        built.status != 0 && pacman.status != 0,
                        "\(what): layerctl \(built.status) \(built.stderr); pacman \(pacman.status) \(pacman.output)")
                    failedAlike.append(
                        "\(what): \(built.stderr.split(separator: "\n").last { $0.hasPrefix("layerctl: ") } ?? "")")
                    continue stacks
                }
                installed.formUnion(packages)
                installed.subtract(removals)
                parent = name
                let exported = "\(work)/export-\(stack)-\(level)"
                let export = try Harness.run(["export", name, "--store", store, "--format", "dir", "-o", exported])
                #expect(export.status == 0, "\(what): \(export.stderr)")
                let found = try Self.listing(exported)
                let expected = try Self.listing(root, skipping: "var/lib/pacman/sync")
                #expect(found == expected, "\(what): \(OCILayerTests.difference(found, expected))")
                guard found == expected else { break stacks }
                compared[
                    arguments[0] == "-R" ? "remove" : arguments[0] == "-Syu" ? "upgrade" : "install", default: 0] += 1
                try FileManager.default.removeItem(atPath: exported)
            }
        }
        #expect(compared.values.reduce(0, +) >= Self.stacks, "\(compared) layers compared")
        try FileManager.default.removeItem(atPath: work)
    }

    /// `OCILayerTests.listing` of `tree` without times, and a package's `desc` in the local
    /// database without its install date.
    static func listing(_ tree: String, skipping: String? = nil) throws -> [String] {
        let local = tree + "/var/lib/pacman/local"
        for package in (try? FileManager.default.contentsOfDirectory(atPath: local)) ?? [] {
            let desc = "\(local)/\(package)/desc"
            guard let text = try? String(contentsOfFile: desc, encoding: .utf8) else { continue }
            let kept = text.components(separatedBy: "\n\n").filter { !$0.hasPrefix("%INSTALLDATE%") }
            try kept.joined(separator: "\n\n").write(toFile: desc, atomically: false, encoding: .utf8)
        }
        if let skipping { try? FileManager.default.removeItem(atPath: tree + "/" + skipping) }
        return try OCILayerTests.listing(tree, implied: [], folderTimes: false, fileTimes: false)
    }
}
