import Foundation
import Glibc
import LayerSupport
import Testing

/// A repository's database comes from whoever runs its mirror: libalpm parses it in a confined
/// child, and layerctl quotes it in messages. Mutants of the demo database: each field of the
/// packages a small layer installs replaced in turn by a hostile value (100,000 bytes, escape
/// sequences and line breaks, nothing, a path), then random mutants of those packages' `desc`
/// and of the compressed database itself, from a fixed seed. Each is built from a fresh store;
/// whatever it is, layerctl ends of itself, not by a signal (libalpm 6.0 crashed on a package
/// without `%FILENAME%`), a failure is one line that starts with `layerctl: ` and is at most
/// 1 KiB long, and the store keeps no half layer and no mount. A mirror's package files too:
/// crafted entries (names out of the root, through a symlink, a hard link to a host file, a
/// device) and random bytes, with the sha256 the database names made to match, build inside
/// their layer or end the same way, and nothing lands in the host's /tmp.
@Suite("Mutated repository databases", .serialized, .enabled(if: Harness.canBuild, Harness.cannotBuildReason))
struct RepositoryMutationTests {
    /// How many random mutants a run builds, after the systematic ones.
    static let mutants = 100
    /// How many random mutants of a package file a run builds, after the crafted ones.
    static let packageMutants = 40
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

            """.write(toFile: work + "/layer.yaml", atomically: false, encoding: .utf8)
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

    /// demo-lib's package file as `entries` (crafted entries after its own), zstd-compressed,
    /// and the database with its sha256 and size made to match: libalpm checks it, then
    /// extracts it in the build.
    static func package(_ entries: [OCILayerTests.Crafted], raw: Data? = nil, database original: [String: [UInt8]], in work: String)
        throws -> Data
    {
        let tar = work + "/package.tar"
        if let raw { try raw.write(to: URL(fileURLWithPath: tar)) } else { try OCILayerTests.craft(entries, at: tar) }
        let file = work + "/repo/demo/demo-lib-1.0-1-any.pkg.tar.zst"
        let compressed = try KernelMount.run("/usr/bin/zstd", ["-q", "-f", tar, "-o", file])
        #expect(compressed.status == 0, "\(compressed.output)")
        let bytes = try Data(contentsOf: URL(fileURLWithPath: file))
        var files = original
        let path = try #require(original.keys.first { $0.hasPrefix("demo-lib-1") })
        var desc = String(decoding: files[path]!, as: UTF8.self)
        desc = desc.replacingOccurrences(of: "%SHA256SUM%\n[0-9a-f]+", with: "%SHA256SUM%\n" + Digest.sha256(bytes), options: .regularExpression)
        desc = desc.replacingOccurrences(of: "%CSIZE%\n[0-9]+", with: "%CSIZE%\n\(bytes.count)", options: .regularExpression)
        desc = desc.replacingOccurrences(of: "%MD5SUM%\n[0-9a-f]+\n\n", with: "", options: .regularExpression)
        files[path] = Array(desc.utf8)
        return try database(files, in: work)
    }

    @Test("every mutant of a package file whose sha256 its database names builds inside its layer, or ends in one short line")
    func packageFiles() throws {
        typealias Crafted = OCILayerTests.Crafted
        let work = try Self.prepare()
        let original = try Self.entries(in: work).mapValues { Array($0.utf8) }
        let info = try KernelMount.run("/usr/bin/bsdtar", ["-xOf", Harness.demoOut + "/repo/demo/demo-lib-1.0-1-any.pkg.tar.zst", ".PKGINFO"])
        let own = [
            Crafted(name: ".PKGINFO", data: info.output), Crafted(name: "usr", type: Glibc.S_IFDIR),
            Crafted(name: "usr/lib", type: Glibc.S_IFDIR), Crafted(name: "usr/lib/demo", type: Glibc.S_IFDIR),
            Crafted(name: "usr/lib/demo/lib.txt", data: "demo-lib 1.0\n"),
        ]
        // The package as crafted here builds: the mutants start from what works.
        try Self.package(own, database: original, in: work).write(to: URL(fileURLWithPath: work + "/repo/demo/demo.db"))
        let store = try Harness.temporaryDirectory("mutation-repo-store")
        defer { try? FileManager.default.removeItem(atPath: store) }
        let built = try Harness.run(["build", work + "/layer.yaml", "--store", store])
        #expect(built.status == 0, "\(built.stderr)")
        // Names that would land outside the layer's root if anything followed them there.
        let outside = "/tmp/layerctl-pwned-\(getpid())"
        let hostile: [[Crafted]] = [
            [Crafted(name: "../../../../\(outside)-dotdot")], [Crafted(name: "\(outside)-absolute")],
            [Crafted(name: "usr/lib/escape", type: Glibc.S_IFLNK, symlink: "/tmp"), Crafted(name: "usr/lib/escape/\((outside as NSString).lastPathComponent)-link")],
            [Crafted(name: "usr/lib/shadow", hardlink: "/etc/shadow")], [Crafted(name: "usr/lib/sda", type: Glibc.S_IFBLK)],
            [Crafted(name: "usr/lib/fifo", type: Glibc.S_IFIFO)], [Crafted(name: "usr/lib/" + String(repeating: "n", count: 300))],
            [Crafted(name: "usr/lib/demo/lib.txt", data: "twice")], [Crafted(name: "usr/lib/zeros", zeros: 50 << 20)],
            [Crafted(name: ".PKGINFO", data: "pkgname = other\n")],
        ]
        var faults: [String] = []
        func check(_ label: String, _ entries: [Crafted], raw: Data? = nil) throws {
            let database = try Self.package(entries, raw: raw, database: original, in: work)
            if let fault = try Self.fault(building: database, in: work) { faults.append("\(label): \(fault)") }
        }
        for (index, entries) in hostile.enumerated() { try check("crafted \(index) (\(entries.last!.name.prefix(60)))", own + entries) }
        // Random bytes of the package's tar.
        var random = MutationTests.Random(state: 90)
        try OCILayerTests.craft(own, at: work + "/own.tar")
        let tar = try Data(contentsOf: URL(fileURLWithPath: work + "/own.tar"))
        for number in 0..<Self.packageMutants { try check("bytes \(number)", [], raw: ImageMutationTests.mutate(tar, &random)) }
        let touched = try FileManager.default.contentsOfDirectory(atPath: "/tmp").filter { $0.hasPrefix("layerctl-pwned-\(getpid())") }
        #expect(touched.isEmpty, "the host's /tmp got \(touched)")
        #expect(faults.isEmpty, "\(faults.count) mutants:\n\(faults.prefix(5).joined(separator: "\n"))")
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
