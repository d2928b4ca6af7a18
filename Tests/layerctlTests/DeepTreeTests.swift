import Foundation
import Glibc
import LayerEntries
import Testing

/// Trees as deep as a path in a layer may go (`PathLimit`: 3,072 bytes, 1,536 names), and deeper.
/// A `run:` step, a pulled layer or a crafted image can nest folders without end, past the 4,096
/// bytes any path can name. What is within the limit builds, exports and reads as the kernel reads
/// it; what is past it is refused in one line, whatever the depth, with nothing left behind. Each
/// command runs with a limit of 1,024 open files, the usual one, so a walk that held a folder open
/// per level would fail here.
@Suite("Deep trees", .serialized, .enabled(if: Harness.canBuild, Harness.cannotBuildReason))
struct DeepTreeTests {
    /// layerctl with `arguments` under the usual limit of open files, soft and hard.
    static func run(_ arguments: [String]) throws -> (status: Int32, output: String) {
        try KernelMount.run("/usr/bin/prlimit", ["--nofile=1024:1024", Harness.executable] + arguments)
    }

    /// A run: step that goes `depth` folders down from / and writes `f` there.
    static func nest(_ depth: Int) -> String {
        "perl -e 'for (1..\(depth)) { mkdir \"d\" or die; chdir \"d\" or die } open F, \">f\" or die; print F \"deep\\n\"'"
    }

    /// "/d" `depth` times, then "/f": 3,072 bytes at 1,535.
    static func deepFile(_ depth: Int) -> String { String(repeating: "/d", count: depth) + "/f" }

    @Test(
        "a run: step nests folders as deep as a path may go: it builds, diffs and exports, and the kernel reads the file; 20,000 deep is refused in one line, nothing left"
    )
    func builtTrees() throws {
        let layers = try Harness.demoLayers()
        let store = try Harness.temporaryDirectory("store")
        #expect(Self.deepFile(1535).utf8.count == PathLimit.bytes)
        try "from: base\nrun:\n  - \(Self.nest(1535))\n".write(toFile: layers + "/limit.yaml", atomically: false, encoding: .utf8)
        let built = try Self.run(["build", layers + "/limit.yaml", "--store", store])
        #expect(built.status == 0, "\(built.output)")

        let diff = try Self.run(["diff", "base", "limit", "--store", store])
        #expect(diff.status == 1, "\(diff.output)")
        #expect(diff.output.contains("A " + Self.deepFile(1535) + "\n"), "\(diff.output.suffix(300))")

        let image = try Harness.temporaryDirectory("deep-image") + "/limit.squashfs"
        let export = try Self.run(["export", "limit", "-o", image, "--store", store])
        #expect(export.status == 0, "\(export.output)")
        let mounted = try KernelMount.squashfs(image)
        defer { KernelMount.unmount(mounted) }
        #expect(try String(contentsOfFile: mounted + Self.deepFile(1535), encoding: .utf8) == "deep\n")

        let verify = try Self.run(["gc", "--verify", "--store", store])
        #expect(verify.status == 0 && !verify.output.contains("damaged"), "\(verify.output)")

        // One folder more is one name past the limit (`--check` walks the tree once more, to name
        // what each step wrote); 20,000 is past what any path can name, and the build's folder
        // must still go whole.
        for (depth, options) in [(1536, ["--check"]), (1536, []), (20000, [])] {
            try "from: base\nrun:\n  - \(Self.nest(depth))\n".write(
                toFile: layers + "/deeper.yaml", atomically: false, encoding: .utf8)
            let refused = try Self.run(["build", layers + "/deeper.yaml", "--store", store] + options)
            #expect(refused.status == 6, "\(refused.output.suffix(500))")
            let labelled = refused.output.split(separator: "\n").filter { $0.contains("layerctl: ") }
            #expect(labelled.count == 1, "\(refused.output.suffix(500))")
            #expect(
                labelled.first?.contains(layers + "/deeper.yaml: the tree its steps made is refused: the path /d/d/d") == true
                    && refused.output.contains("(3074 bytes, 1537 names deep) is longer than a path in a layer may be (3072 bytes)"),
                "\(refused.output.suffix(500))")
            #expect((labelled.first?.count ?? 0) < 400, "the line quotes the whole path")
            #expect(try FileManager.default.contentsOfDirectory(atPath: store + "/tmp").isEmpty)
            #expect(try Harness.leakedMounts(under: store).isEmpty)
        }
        try Harness.expectValidStore(store)
    }

    @Test(
        "an image, a folder or a boot's upper folder deeper than a path in a layer may be is refused in one line; one as deep as may be reads"
    )
    func imagesAndFolders() throws {
        let work = try Harness.temporaryDirectory("deep")
        var images: [Int: String] = [:]
        for depth in [1535, 1600] {
            let folder = "\(work)/\(depth)"
            let file = folder + Self.deepFile(depth)
            try FileManager.default.createDirectory(
                atPath: (file as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try "deep\n".write(toFile: file, atomically: false, encoding: .utf8)
            images[depth] = "\(work)/\(depth).squashfs"
            let made = try KernelMount.run(
                "/usr/bin/mksquashfs", [folder, images[depth]!, "-quiet", "-no-progress", "-all-root", "-mkfs-time", "0"])
            #expect(made.status == 0, "\(made.output)")
        }
        // The kernel reads the deeper image: it is a good image, refused for its depth alone.
        let mounted = try KernelMount.squashfs(images[1600]!)
        #expect(try String(contentsOfFile: mounted + Self.deepFile(1600), encoding: .utf8) == "deep\n")
        KernelMount.unmount(mounted)

        let same = try Self.run(["diff", images[1535]!, "\(work)/1535"])
        #expect(same.status == 0, "\(same.output)")
        try FileManager.default.createDirectory(atPath: "\(work)/empty", withIntermediateDirectories: false)
        let changes = try Self.run(["changes", "--upper", "\(work)/1535", "--lower", "\(work)/empty"])
        #expect(changes.status == 0 && changes.output.contains("1536 added"), "\(changes.output.prefix(300))")
        for (operands, named) in [
            (["diff", images[1600]!, "\(work)/1535"], "read \(images[1600]!): the path /d/d/d"),
            (["diff", "\(work)/1600", images[1535]!], "the path /d/d/d"),
            (["changes", "--upper", "\(work)/1600", "--lower", "\(work)/empty"], "read \(work)/1600: the path /d/d/d"),
        ] {
            let refused = try Self.run(operands)
            #expect(refused.status == 3, "\(refused.output.suffix(500))")
            let lines = refused.output.split(separator: "\n")
            #expect(lines.count == 1 && lines[0].count < 400, "\(refused.output.suffix(500))")
            #expect(
                refused.output.contains(named)
                    && refused.output.contains("(3074 bytes, 1537 names deep) is longer than a path in a layer may be"),
                "\(refused.output.suffix(500))")
        }
    }

    @Test("a store whose own path leaves a layer's paths no room is refused in one line")
    func longStorePath() throws {
        let store = try Harness.temporaryDirectory("store") + String(repeating: "/" + String(repeating: "s", count: 200), count: 4)
        let refused = try Self.run(["ls", "--store", store])
        #expect(refused.status == 3, "\(refused.output)")
        #expect(
            refused.output.split(separator: "\n").count == 1
                && refused.output.contains("longer than a store's may be (768): choose a shorter --store or LAYERCTL_STORE"),
            "\(refused.output)")
        #expect(!FileManager.default.fileExists(atPath: store))
    }
}
