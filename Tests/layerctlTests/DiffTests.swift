import Foundation
import Glibc
import Testing

/// `layerctl diff`: every change kind on crafted stacks, a package upgrade between repository
/// states, images against layers, and an oracle: sqfsdiff on our images and diff -r on the kernel's
/// mounts of them report the same paths.
@Suite("Diff", .serialized, .enabled(if: Harness.isRoot, "needs root to craft trusted.* xattrs and mount images"))
struct DiffTests {
    static func desc(_ name: String, _ version: String) -> String { "%NAME%\n\(name)\n\n%VERSION%\n\(version)\n\n" }

    /// `old`: a package `tool` and unowned files; `new` on top changes each of them one way.
    func craft() throws -> CraftedStack {
        let stack = try CraftedStack("diff")
        try stack.layer("old") { tree in
            for folder in [
                "etc", "opq", "usr", "usr/bin", "usr/share", "usr/share/tool", "var", "var/lib", "var/lib/pacman",
                "var/lib/pacman/local", "var/lib/pacman/local/tool-1.0-1",
            ] {
                try tree.directory(folder)
            }
            try tree.file("var/lib/pacman/local/tool-1.0-1/desc", Self.desc("tool", "1.0-1"))
            try tree.file(
                "var/lib/pacman/local/tool-1.0-1/files",
                "%FILES%\nusr/\nusr/bin/\nusr/bin/tool\nusr/share/tool/\nusr/share/tool/data\n\n")
            try tree.file("usr/bin/tool", "tool 1", mode: 0o755)
            try tree.file("usr/share/tool/data", "data")
            try tree.file("etc/conf", "aaaa")
            try tree.file("etc/mode", "m")
            try tree.file("etc/owner", "o")
            try tree.file("etc/attr", "x")
            try tree.xattr("etc/attr", "user.note", Array("1".utf8))
            try tree.file("etc/typechange", "t")
            try tree.symlink("etc/link", to: "a")
            try tree.file("etc/same", "same")
            try tree.file("opq/a", "a")
            try tree.file("opq/b", "b")
            try tree.directory("gone")
            try tree.file("gone/x", "x")
            try tree.device("node", character: true, major: 1, minor: 3)
        }
        try stack.layer("new") { tree in
            for folder in [
                "etc", "usr", "usr/bin", "var", "var/lib", "var/lib/pacman", "var/lib/pacman/local",
                "var/lib/pacman/local/tool-2.0-1",
            ] {
                try tree.directory(folder)
            }
            try tree.whiteout("usr/bin/tool")
            try tree.whiteout("var/lib/pacman/local/tool-1.0-1")
            try tree.file("var/lib/pacman/local/tool-2.0-1/desc", Self.desc("tool", "2.0-1"))
            try tree.file(
                "var/lib/pacman/local/tool-2.0-1/files", "%FILES%\nusr/\nusr/share/tool/\nusr/share/tool/data\n\n")
            try tree.file("etc/conf", "bbbb")
            try tree.file("etc/mode", "m", mode: 0o600)
            try tree.file("etc/owner", "o", owner: (1, 1))
            try tree.file("etc/attr", "x")
            try tree.xattr("etc/attr", "user.note", Array("2".utf8))
            try tree.directory("etc/typechange")
            try tree.symlink("etc/link", to: "b")
            try tree.file("etc/added", "new")
            try tree.file("gone", "a file now")
            try tree.directory("opq")
            try tree.opaque("opq")
            try tree.file("opq/c", "c")
            try tree.device("node", character: true, major: 1, minor: 5)
        }
        return stack
    }

    static let expected = [
        "added /etc/added unowned", "modified /etc/attr xattrs unowned", "modified /etc/conf content unowned",
        "modified /etc/link target unowned", "modified /etc/mode mode unowned", "modified /etc/owner owner unowned",
        "modified /etc/typechange type unowned", "modified /gone type unowned", "removed /gone/x unowned",
        "modified /node device unowned", "removed /opq/a unowned",
        "removed /opq/b unowned", "added /opq/c unowned", "removed /usr/bin/tool tool",
        "removed /var/lib/pacman/local/tool-1.0-1 tool", "removed /var/lib/pacman/local/tool-1.0-1/desc tool",
        "removed /var/lib/pacman/local/tool-1.0-1/files tool", "added /var/lib/pacman/local/tool-2.0-1 tool",
        "added /var/lib/pacman/local/tool-2.0-1/desc tool", "added /var/lib/pacman/local/tool-2.0-1/files tool",
    ]

    func entries(_ json: String) throws -> (files: [String], packages: [String]) {
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
        let files = (object["entries"] as? [[String: Any]] ?? []).map { entry in
            let differences = (entry["differences"] as? [String] ?? []).joined(separator: ",")
            return "\(entry["change"] ?? "") \(entry["path"] ?? "")" + (differences.isEmpty ? "" : " " + differences)
                + " \(entry["owner"] as? String ?? "unowned")"
        }
        let packages = (object["packages"] as? [[String: Any]] ?? []).map {
            "\($0["change"] ?? "") \($0["name"] ?? "") \($0["before"] ?? "-") \($0["after"] ?? "-")"
        }
        return (files, packages)
    }

    @Test(
        "every change kind between two layers, with its package; the same between their images; exit 1, and 0 when equal"
    )
    func changeKinds() throws {
        let stack = try craft()
        let result = try Harness.run(["diff", "old", "new", "--store", stack.store, "--json"])
        #expect(result.status == 1, "\(result.stderr)")
        let (files, packages) = try entries(result.stdout)
        #expect(files == Self.expected, "\(files)")
        #expect(packages == ["upgraded tool 1.0-1 2.0-1"])

        let images = try Harness.temporaryDirectory("diff-images")
        for name in ["old", "new"] {
            let export = try Harness.run(["export", name, "--store", stack.store, "-o", "\(images)/\(name).squashfs"])
            #expect(export.status == 0, "\(export.stderr)")
        }
        let fromImages = try Harness.run(["diff", images + "/old.squashfs", images + "/new.squashfs", "--json"])
        #expect(fromImages.status == 1, "\(fromImages.stderr)")
        #expect(try entries(fromImages.stdout).files == Self.expected)
        // A layer and its own image are the same system.
        let same = try Harness.run(["diff", "new", images + "/new.squashfs", "--store", stack.store])
        #expect(same.status == 0, "\(same.stdout)\(same.stderr)")
        #expect(same.stdout == "packages: the same\nfiles: the same\n")

        let summary = try Harness.run(["diff", "old", "new", "--store", stack.store])
        #expect(
            summary.stdout.hasPrefix(
                "packages: 1 upgraded\n  ~ tool 1.0-1 -> 2.0-1 (upgraded)\nfiles: 5 added, 8 modified, 7 removed\n"),
            "\(summary.stdout)")
        #expect(summary.stdout.contains("\nunowned:\n  A /etc/added\n  M /etc/attr (xattrs)\n"), "\(summary.stdout)")
        let names = try Harness.run(["diff", "old", "new", "--store", stack.store, "--name-only"])
        #expect(names.stdout.split(separator: "\n").count == Self.expected.count)
    }

    @Test("the oracle: sqfsdiff on the two images, and diff -r on their kernel mounts, report the same paths")
    func oracle() throws {
        let stack = try craft()
        let images = try Harness.temporaryDirectory("diff-images")
        for name in ["old", "new"] {
            #expect(
                try Harness.run(["export", name, "--store", stack.store, "-o", "\(images)/\(name).squashfs"]).status
                    == 0)
        }
        let ours = Set(
            try Harness.run(["diff", images + "/old.squashfs", images + "/new.squashfs", "--name-only"]).stdout
                .split(separator: "\n").map(String.init))
        #expect(ours.count == Self.expected.count)

        let old = try KernelMount.squashfs(images + "/old.squashfs")
        defer { KernelMount.unmount(old) }
        let new = try KernelMount.squashfs(images + "/new.squashfs")
        defer { KernelMount.unmount(new) }
        // Both tools name a folder that is on one side only, or that became something else, once;
        // ours lists what was or is in it too.
        func expanded(_ paths: Set<String>) throws -> Set<String> {
            var all = paths
            for path in paths {
                var isFolder = [ObjCBool(false), ObjCBool(false)]
                let exists = [
                    FileManager.default.fileExists(atPath: old + path, isDirectory: &isFolder[0]),
                    FileManager.default.fileExists(atPath: new + path, isDirectory: &isFolder[1]),
                ]
                for (side, root) in [old, new].enumerated()
                where exists[side] && isFolder[side].boolValue && !(exists[1 - side] && isFolder[1 - side].boolValue) {
                    let inside = try KernelMount.run("/usr/bin/find", [root + path, "-mindepth", "1"]).output
                    for found in inside.split(separator: "\n") { all.insert(String(found.dropFirst(root.count))) }
                }
            }
            return all
        }

        // sqfsdiff: "< path" and "> path" for one side only, a line naming "/path" for the rest.
        let sqfsdiff = try KernelMount.run(
            "/usr/bin/sqfsdiff", ["-a", images + "/old.squashfs", "-b", images + "/new.squashfs"])
        #expect(sqfsdiff.status == 1, "\(sqfsdiff.output)")
        var theirs = Set<String>()
        for line in sqfsdiff.output.split(separator: "\n") {
            if line.hasPrefix("< ") || line.hasPrefix("> ") {
                theirs.insert("/" + line.dropFirst(2))
            } else if let word = line.split(separator: " ").first(where: { $0.hasPrefix("/") }) {
                theirs.insert(String(word))
            }
        }
        // sqfsdiff does not compare xattrs: ours reports the one xattr-only change more.
        theirs = try expanded(theirs)
        #expect(theirs == ours.subtracting(["/etc/attr"]), "sqfsdiff: \(theirs.sorted())\nours: \(ours.sorted())")

        // diff -r compares what is there and what the contents are, not metadata.
        let diffR = try KernelMount.run("/usr/bin/diff", ["-r", "--no-dereference", old, new])
        var reported = Set<String>()
        for line in diffR.output.split(separator: "\n") {
            if line.hasPrefix("Only in ") {
                let rest = line.dropFirst("Only in ".count)
                guard let colon = rest.range(of: ": ") else { continue }
                let folder = String(rest[..<colon.lowerBound])
                let root = folder.hasPrefix(old) ? old : new
                let path = String(folder.dropFirst(root.count)) + "/" + rest[colon.upperBound...]
                reported.insert(path)
            } else if let word = line.split(separator: " ").first(where: { $0.hasPrefix(old) }) {
                reported.insert(String(word.dropFirst(old.count)))
            }
        }
        reported = try expanded(reported)
        let contentChanges = Set(
            Self.expected.filter {
                $0.hasPrefix("added") || $0.hasPrefix("removed") || $0.contains(" content") || $0.contains(" type")
                    || $0.contains(" target") || $0.contains(" device")
            }
            .map { String($0.split(separator: " ")[1]) })
        #expect(reported == contentChanges, "diff -r: \(reported.sorted())\nours: \(contentChanges.sorted())")
    }

    @Test("a package upgrade between two states of the demo repository, and two demo images that differ by one layer")
    func demoUpgrade() throws {
        guard Harness.hasDemoRepository else { return }
        let folder = try Harness.demoLayers()
        let store = try Harness.temporaryDirectory("store")
        #expect(try Harness.run(["build", folder + "/gaming.yaml", "--store", store]).status == 0)
        let images = try Harness.temporaryDirectory("diff-images")
        #expect(
            try Harness.run(["export", "gaming", "--store", store, "-o", images + "/gaming-1.squashfs"]).status == 0)
        #expect(try Harness.run(["export", "nvidia", "--store", store, "-o", images + "/nvidia.squashfs"]).status == 0)
        let old = try String(contentsOfFile: store + "/refs/gaming", encoding: .utf8).trimmingCharacters(
            in: .whitespacesAndNewlines)
        try Harness.setRepository(in: folder, to: "repo-next")
        #expect(try Harness.run(["build", folder + "/gaming.yaml", "--store", store]).status == 0)

        let upgrade = try Harness.run(["diff", old, "gaming", "--store", store, "--json"])
        #expect(upgrade.status == 1, "\(upgrade.stderr)")
        let (files, packages) = try entries(upgrade.stdout)
        #expect(packages == ["upgraded game 1.0-1 1.1-1"], "\(packages)")
        #expect(files.contains("modified /usr/bin/game content game"), "\(files)")

        // Two images one layer apart: what gaming adds to nvidia.
        let images2 = try Harness.run([
            "diff", images + "/nvidia.squashfs", images + "/gaming-1.squashfs", "--packages",
        ])
        #expect(images2.status == 1)
        #expect(images2.stdout == "packages: 1 added, 1 removed\n  + game 1.0-1\n  - nano 7.2-1\n", "\(images2.stdout)")
    }

    /// A stranger's layer names its files and its packages: a newline would forge a line of the
    /// output, and an escape sequence would drive the terminal of whoever reads it.
    @Test("names and package fields that hold control characters, marks that reorder text or bytes that are not UTF-8 print escaped, one line each, in every text form of diff and in inspect")
    func controlCharacters() throws {
        let stack = try CraftedStack("diff-controls")
        try stack.layer("plain") { t in try t.directory("etc") }
        try stack.layer("hostile") { t in
            for folder in ["etc", "var", "var/lib", "var/lib/pacman", "var/lib/pacman/local", "var/lib/pacman/local/evil-1-1"] {
                try t.directory(folder)
            }
            try t.file("etc/x\n  D forged", "x")
            try t.file("etc/\u{1B}[31mred\u{1B}[0m", "x")
            try t.file("etc/c1-\u{9B}2J", "x")
            // A right-to-left override shows what follows it backwards: "exe.txt" on a terminal that
            // lays out bidirectional text. Two names that are not UTF-8 would both read "odd-\u{FFFD}".
            try t.file("etc/\u{202E}txt.exe", "x")
            try t.file(Array("etc/odd-".utf8) + [0xFE], Array("x".utf8))
            try t.file(Array("etc/odd-".utf8) + [0xFF], Array("x".utf8))
            try t.file("var/lib/pacman/local/evil-1-1/desc", Self.desc("evil\u{1B}]0;owned\u{07}", "1-\u{1B}[2J1"))
            try t.file("var/lib/pacman/local/evil-1-1/files", "%FILES%\netc/\u{1B}[31mred\u{1B}[0m\n\n")
        }
        for mode in [[], ["--files"], ["--name-only"], ["--packages"], ["--stat"]] {
            let result = try Harness.run(["diff", "plain", "hostile", "--store", stack.store] + mode)
            #expect(result.status == 1, "\(mode): \(result.stdout)\(result.stderr)")
            let controls = result.stdout.unicodeScalars.filter {
                ($0.value < 0x20 && $0 != "\n" && $0 != "\t") || (0x7F...0x9F).contains($0.value)
                    || (0x202A...0x202E).contains($0.value) || $0.value == 0xFFFD
            }
            #expect(controls.isEmpty, "\(mode): \(controls.map(\.value)) in \(result.stdout)")
            let lines = result.stdout.split(separator: "\n")
            #expect(!lines.contains { $0.hasPrefix("  D ") }, "\(mode): a forged line: \(result.stdout)")
        }
        let every = try Harness.run(["diff", "plain", "hostile", "--files", "--store", stack.store])
        #expect(
            every.stdout.contains("A /etc/x\\x0a  D forged  [unowned]")
                && every.stdout.contains("A /etc/\\x1b[31mred\\x1b[0m  [evil\\x1b]0;owned\\x07]")
                && every.stdout.contains("A /etc/\\xe2\\x80\\xaetxt.exe  [unowned]")
                && every.stdout.contains("A /etc/odd-\\xfe  [unowned]") && every.stdout.contains("A /etc/odd-\\xff  [unowned]"),
            "\(every.stdout)")
        let packages = try Harness.run(["diff", "plain", "hostile", "--packages", "--store", stack.store])
        #expect(packages.stdout.contains("+ evil\\x1b]0;owned\\x07 1-\\x1b[2J1"), "\(packages.stdout)")
        // JSON holds text: a name that is not UTF-8 has its bytes beside it, and only such a name.
        let json = try Harness.run(["diff", "plain", "hostile", "--json", "--store", stack.store])
        let report = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
        let entries = report["entries"] as? [[String: Any]] ?? []
        let bytes = entries.compactMap { entry in
            (entry["pathBase64"] as? String).flatMap { Data(base64Encoded: $0) }.map { [UInt8]($0) }
        }
        #expect(bytes == [Array("/etc/odd-".utf8) + [0xFE], Array("/etc/odd-".utf8) + [0xFF]], "\(json.stdout)")
        #expect(entries.contains { $0["path"] as? String == "/etc/\u{202E}txt.exe" && $0["pathBase64"] == nil })

        // inspect prints a record, which for a pulled layer an image wrote.
        let record = stack.store + "/layers/" + stack.keys[1] + "/layer.json"
        var object = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: record))) as? [String: Any])
        object["added"] = [
            [
                "name": "evil\u{1B}]0;owned\u{07}", "version": "1\n  - forged", "repository": "r", "filename": "f",
                "sha256": "00", "downloadSize": 0, "installedSize": 0,
            ]
        ]
        try JSONSerialization.data(withJSONObject: object).write(to: URL(fileURLWithPath: record))
        let inspect = try Harness.run(["inspect", "hostile", "--store", stack.store])
        #expect(inspect.status == 0, "\(inspect.stderr)")
        #expect(
            !inspect.stdout.unicodeScalars.contains { ($0.value < 0x20 && $0 != "\n") || (0x7F...0x9F).contains($0.value) }
                && !inspect.stdout.split(separator: "\n").contains { $0.hasPrefix("  - forged") }
                && inspect.stdout.contains("+ evil\\x1b]0;owned\\x07 1\\x0a  - forged"),
            "\(inspect.stdout)")
    }

    @Test("symlink targets and attribute names that are not UTF-8 are compared as bytes, in layers and images alike")
    func rawBytes() throws {
        let stack = try CraftedStack("diff-bytes")
        try stack.layer("one") { t in
            try t.symlink(Array("link".utf8), to: Array("target-".utf8) + [0xFF])
            try t.file("tagged", "tagged\n")
            try t.xattr("tagged", Array("user.".utf8) + [0xFF], [1])
        }
        // The same names with 0xfe for 0xff: both decode to U+FFFD, but they are other bytes.
        try stack.layer("two") { t in
            try t.symlink(Array("link".utf8), to: Array("target-".utf8) + [0xFE])
            try t.file("tagged", "tagged\n")
            try t.xattr("tagged", Array("user.".utf8) + [0xFE], [1])
        }
        let out = try Harness.temporaryDirectory("diff-bytes")
        for name in ["one", "two"] {
            let export = try Harness.run(["export", name, "--store", stack.store, "-o", out + "/\(name).squashfs"])
            #expect(export.status == 0, "\(export.stderr)")
        }
        for (a, b) in [("one", "two"), (out + "/one.squashfs", out + "/two.squashfs"), ("one", out + "/two.squashfs")] {
            let result = try Harness.run(["diff", a, b, "--files", "--store", stack.store])
            #expect(result.status == 1, "\(a) \(b): \(result.stdout)\(result.stderr)")
            #expect(result.stdout.contains("/link") && result.stdout.contains("target"), "\(result.stdout)")
            #expect(result.stdout.contains("/tagged") && result.stdout.contains("xattrs"), "\(result.stdout)")
        }
        for (a, b) in [("one", out + "/one.squashfs"), ("two", out + "/two.squashfs")] {
            let result = try Harness.run(["diff", a, b, "--store", stack.store])
            #expect(result.status == 0, "\(a) \(b): \(result.stdout)\(result.stderr)")
        }
    }

    @Test("bad operands: an unknown name, a corrupt image, an ambiguous key prefix; two modes at once is a usage error")
    func badOperands() throws {
        let stack = try craft()
        let unknown = try Harness.run(["diff", "old", "nothing", "--store", stack.store])
        #expect(unknown.status == 3)
        #expect(unknown.stderr.contains("no layer named or keyed nothing"), "\(unknown.stderr)")
        let junk = try Harness.temporaryDirectory("junk") + "/junk.squashfs"
        try Data(repeating: 7, count: 8192).write(to: URL(fileURLWithPath: junk))
        let corrupt = try Harness.run(["diff", "old", junk, "--store", stack.store])
        #expect(corrupt.status == 3)
        #expect(corrupt.stderr.contains("is neither a folder nor a squashfs image"), "\(corrupt.stderr)")
        // Two more layers whose keys share the prefix abcd.
        try stack.layer("one", key: "abcd1" + String(repeating: "0", count: 59)) { try $0.file("one", "1") }
        try stack.layer("two", key: "abcd2" + String(repeating: "0", count: 59)) { try $0.file("two", "2") }
        let ambiguous = try Harness.run(["diff", "abcd", "old", "--store", stack.store])
        #expect(ambiguous.status == 3)
        #expect(ambiguous.stderr.contains("abcd"), "\(ambiguous.stderr)")
        let usage = try Harness.run(["diff", "old", "new", "--files", "--json", "--store", stack.store])
        #expect(usage.status == 2)
    }

    /// A sparse file costs its maker no disk: the old diff read this `desc` of 2 GiB whole, in
    /// 62 s and 4.2 GB of memory, to compare the packages.
    @Test("a package database file larger than layerctl reads is named with its side, and not read")
    func sparseDatabaseFile() throws {
        let work = try Harness.temporaryDirectory("sparse-diff")
        let desc = "/var/lib/pacman/local/x-1-1/desc"
        for side in ["a", "b"] {
            try FileManager.default.createDirectory(atPath: work + "/\(side)/var/lib/pacman/local/x-1-1", withIntermediateDirectories: true)
            try "%NAME%\nx\n\n%VERSION%\n1-1\n\n".write(toFile: work + "/\(side)" + desc, atomically: false, encoding: .utf8)
        }
        #expect(truncate(work + "/b" + desc, 2 << 30) == 0)
        let result = try KernelMount.run("/usr/bin/time", ["-f", "maxrss %M", Harness.executable, "diff", work + "/a", work + "/b"])
        #expect(result.status == 3, "\(result.output)")
        #expect(result.output.contains("\(work)/b: \(desc) is 2.0 GiB, more than the 64.0 MiB layerctl reads of such a file"), "\(result.output)")
        let kilobytes = result.output.split(separator: "\n").last { $0.hasPrefix("maxrss ") }.flatMap { Int($0.dropFirst(7)) } ?? -1
        #expect(kilobytes > 0 && kilobytes < 512 << 10, "\(kilobytes) KB")
    }
}
