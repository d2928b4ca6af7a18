import Foundation
import Glibc
import Testing

/// A repository's database comes from whoever runs its mirror: libalpm parses it in a confined
/// child, and layerctl quotes it in messages. Mutants of the demo database: each field of the
/// packages a small layer installs replaced in turn by a hostile value (100,000 bytes, escape
/// sequences and line breaks, nothing, a path), then random mutants of those packages' `desc`
/// and of the compressed database itself, from a fixed seed. Each is built from a fresh store;
/// whatever it is, layerctl ends of itself, not by a signal (libalpm 6.0 crashed on a package
/// without `%FILENAME%`), a failure is one line that starts with `layerctl: ` and is at most
/// 1 KiB long, and the store keeps no half layer and no mount.
@Suite("Mutated repository databases", .serialized, .enabled(if: Harness.canBuild, Harness.cannotBuildReason))
struct RepositoryMutationTests {
    /// How many random mutants a run builds, after the systematic ones.
    static let mutants = 100
    /// What the layer installs: demo-app, and through its dependencies the rest.
    static let packages = ["demo-app", "demo-lib", "demo-data", "busybox"]

    /// The demo database's files: `NAME-VERSION/desc` → its text.
    static func entries(in work: String) throws -> [String: String] {
        let folder = work + "/entries"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let extracted = try KernelMount.run("/usr/bin/bsdtar", ["-xf", Harness.demoOut + "/repo/demo/demo.db", "-C", folder])
        #expect(extracted.status == 0, "\(extracted.output)")
        var entries: [String: String] = [:]
        for entry in try FileManager.default.contentsOfDirectory(atPath: folder) {
            entries[entry + "/desc"] = try String(contentsOfFile: folder + "/\(entry)/desc", encoding: .utf8)
        }
        return entries
    }

    /// The folder of `package` in the database: `demo-app-1.0-1/desc`.
    static func desc(of package: String, in entries: [String: String]) throws -> String {
        try #require(entries.keys.first { $0.hasPrefix(package + "-") && $0.dropFirst(package.count + 1).first?.isNumber == true })
    }

    /// `entries` as a gzip tar, as repo-add writes a database.
    static func database(_ entries: [String: [UInt8]], in work: String) throws -> Data {
        let folder = work + "/pack"
        try? FileManager.default.removeItem(atPath: folder)
        for (path, bytes) in entries {
            try FileManager.default.createDirectory(
                atPath: folder + "/" + (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try Data(bytes).write(to: URL(fileURLWithPath: folder + "/" + path))
        }
        let names = try FileManager.default.contentsOfDirectory(atPath: folder).sorted()
        let packed = try KernelMount.run("/usr/bin/bsdtar", ["-czf", work + "/demo.db", "-C", folder] + names)
        #expect(packed.status == 0, "\(packed.output)")
        return try Data(contentsOf: URL(fileURLWithPath: work + "/demo.db"))
    }

    /// Each field of `text` (a desc: `%KEY%` then its lines) with its value replaced by each of
    /// `values`.
    static func everyField(_ text: String, values: [String]) -> [String] {
        let blocks = text.components(separatedBy: "\n\n").filter { !$0.isEmpty }
        var mutants: [String] = []
        for (index, block) in blocks.enumerated() {
            guard let key = block.split(separator: "\n").first else { continue }
            for value in values {
                var changed = blocks
                changed[index] = key + "\n" + value
                mutants.append(changed.joined(separator: "\n\n") + "\n\n")
            }
        }
        return mutants
    }

    /// Builds a layer of demo-app from a repository whose database is `database`, in a new
    /// store, and returns what is wrong with how it ended, or nil.
    static func fault(building database: Data, in work: String) throws -> String? {
        let repo = work + "/repo"
        try database.write(to: URL(fileURLWithPath: repo + "/demo/demo.db"))
        let store = try Harness.temporaryDirectory("mutation-repo-store")
        defer { try? FileManager.default.removeItem(atPath: store) }
        return try MutationTests.fault(of: try Harness.run(["build", work + "/layer.yaml", "--store", store]), store: store)
    }

    /// A folder with the layer file and a repository holding the packages it installs.
    static func prepare() throws -> String {
        let work = try Harness.temporaryDirectory("mutation-repo")
        try FileManager.default.createDirectory(atPath: work + "/repo/demo", withIntermediateDirectories: true)
        let source = Harness.demoOut + "/repo/demo"
        for file in try FileManager.default.contentsOfDirectory(atPath: source)
        where file.hasSuffix(".pkg.tar.zst") && packages.contains(where: { file.hasPrefix($0 + "-") }) {
            try FileManager.default.copyItem(atPath: source + "/" + file, toPath: work + "/repo/demo/" + file)
        }
        try """
            from: scratch
            arch: x86_64
            repos:
              - name: demo
                servers: [\(work)/repo/$repo]
                siglevel: Optional TrustAll
            packages: [demo-app]

            """.write(toFile: work + "/layer.yaml", atomically: true, encoding: .utf8)
        return work
    }

    @Test("every mutant of the demo database ends in one short line of its own, or builds")
    func databases() throws {
        let work = try Self.prepare()
        let entries = try Self.entries(in: work)
        let original = entries.mapValues { Array($0.utf8) }
        #expect(try Self.fault(building: try Self.database(original, in: work), in: work) == nil)

        var mutants: [Data] = []
        let values = [String(repeating: "a", count: 100_000), String(repeating: "\u{1B}[31m\n", count: 3000), "", "../../../../etc/passwd"]
        for package in ["demo-app", "demo-lib"] {
            let path = try Self.desc(of: package, in: entries)
            for changed in Self.everyField(entries[path]!, values: values) {
                var files = original
                files[path] = Array(changed.utf8)
                mutants.append(try Self.database(files, in: work))
            }
        }
        var random = MutationTests.Random(state: 78)
        let whole = try Self.database(original, in: work)
        for _ in 0..<Self.mutants {
            if random.below(3) == 0 {
                mutants.append(ImageMutationTests.mutate(whole, &random))
            } else {
                let path = try Self.desc(of: random.pick(Self.packages), in: entries)
                var files = original
                files[path] = [UInt8](ImageMutationTests.mutate(Data(original[path]!), &random))
                mutants.append(try Self.database(files, in: work))
            }
        }
        var faults: [String] = []
        for (number, mutant) in mutants.enumerated() {
            if let fault = try Self.fault(building: mutant, in: work) {
                try mutant.write(to: URL(fileURLWithPath: work + "/fault-\(number).db"))
                faults.append("mutant \(number) (kept in \(work)/fault-\(number).db): \(fault)")
            }
        }
        #expect(faults.isEmpty, "\(faults.count) of \(mutants.count) mutants:\n\(faults.prefix(5).joined(separator: "\n"))")
    }

    @Test("what the mutants found: a package without %FILENAME% or with an empty one, a corrupted package file, 3,000 missing dependencies")
    func found() throws {
        let work = try Self.prepare()
        let entries = try Self.entries(in: work)
        let original = entries.mapValues { Array($0.utf8) }
        func building(_ package: String, _ change: (String) -> String) throws -> Harness.Result {
            var files = original
            let path = try Self.desc(of: package, in: entries)
            files[path] = Array(change(entries[path]!).utf8)
            try Self.database(files, in: work).write(to: URL(fileURLWithPath: work + "/repo/demo/demo.db"))
            let store = try Harness.temporaryDirectory("mutation-repo-store")
            defer { try? FileManager.default.removeItem(atPath: store) }
            return try Harness.run(["build", work + "/layer.yaml", "--store", store])
        }
        func replacing(_ key: String, with value: String) -> (String) -> String {
            { text in
                text.replacingOccurrences(of: "%\(key)%\n[^\n]*(\n[^\n]+)*", with: "%\(key)%\n\(value)", options: .regularExpression)
            }
        }

        // No %FILENAME%: libalpm 6.0 dereferences the missing name while it resolves (pacman
        // crashes the same way). The database is refused at the repository's line.
        let missing = try building("demo-data") { $0.replacingOccurrences(of: "%FILENAME%", with: "%FILENAM%") }
        #expect(missing.status == 5, "\(missing.stderr)")
        #expect(
            missing.stderr.contains("layer.yaml:4:5: read repository demo failed: its database gives package `demo-data` no file name (%FILENAME%)"),
            "\(missing.stderr)")
        // An empty one: the cache's files were linked by it ("link …/cache/pkg/ to … failed: File
        // exists"). (A name with a `/`, or `..`, libalpm drops with the entry.)
        let empty = try building("demo-lib", replacing("FILENAME", with: ""))
        #expect(empty.status == 5, "\(empty.stderr)")
        #expect(empty.stderr.contains("gives package `demo-lib` the file name ``, which is no file's name"), "\(empty.stderr)")
        // A file that does not match its sha256: named, where libalpm hands back no list.
        let corrupted = try building("demo-lib", replacing("SHA256SUM", with: String(repeating: "0", count: 64)))
        #expect(corrupted.status == 5, "\(corrupted.stderr)")
        #expect(corrupted.stderr.contains("demo-lib-1.0-1-any.pkg.tar.zst: invalid or corrupted package (checksum)"), "\(corrupted.stderr)")
        // 3,000 dependencies that nothing provides: five named, the rest counted.
        let many = try building("demo-app", replacing("DEPENDS", with: (0..<3000).map { "dep\($0)" }.joined(separator: "\n")))
        #expect(many.status == 5, "\(many.stderr)")
        #expect(many.stderr.contains("demo-app: requires dep4; and 2995 more"), "\(many.stderr)")
        #expect(many.stderr.utf8.count < 1024, "\(many.stderr.prefix(300))")
    }
}
