import Foundation
import Glibc
import Testing

/// The overlay a layer is built or entered in names every tree below it in its mount options: one
/// page, split at `,` and `:`. A store whose path held `,` `:` `\` or `"` failed at the second
/// layer ("special device layerctl does not exist"), and a stack of more than about 40 layers at
/// the next one ("wrong fs type, bad option"), whatever the store's path.
@Suite("Deep stacks and odd store paths", .serialized, .enabled(if: Harness.canBuild, Harness.cannotBuildReason))
struct StackDepthTests {
    @Test("a store whose path holds , : \\ and \" builds the demo stack, and shell enters it")
    func oddStorePath() throws {
        let layers = try Harness.demoLayers()
        let store = try Harness.temporaryDirectory("odd,st:o\\re\"") + "/store"
        let build = try Harness.run(["build", layers + "/gaming.yaml", "--store", store])
        #expect(build.status == 0, "\(build.stderr)")
        let shell = try Harness.run(["shell", "gaming", "--store", store, "--", "cat", "/etc/greeting"])
        #expect(shell.status == 0 && shell.stdout == "hello from gaming\n", "\(shell.stdout)\(shell.stderr)")

        // A newline in it is refused in one line: layerctl tells its children the path in lines.
        let newline = try Harness.temporaryDirectory("newline") + "/a\nstore"
        let refused = try Harness.run(["build", layers + "/base.yaml", "--store", newline])
        #expect(refused.status == 3, "\(refused.stderr)")
        #expect(
            refused.stderr == "layerctl: the store's path \(newline.replacingOccurrences(of: "\n", with: "\\x0a")) holds a control character; "
                + "a store's path may not (layerctl tells its children the path in lines): choose another --store or LAYERCTL_STORE\n")
        #expect(!FileManager.default.fileExists(atPath: newline))
    }

    @Test("60 layers built one on another, in a store whose path is long; a stack of 200 layers is entered, 201 refused in one line")
    func deepStacks() throws {
        let layers = try Harness.demoLayers()
        // 120 bytes of path: with the trees' paths, the options' page was full at about 20 layers.
        let folder = try Harness.temporaryDirectory("deep-stack")
        let store = folder + "/" + String(repeating: "s", count: 120 - folder.utf8.count - 1)
        var below = "base"
        for index in 1...60 {
            try "from: \(below)\nfiles:\n  - path: /etc/layer-\(index)\n    content: \"\(index)\\n\"\n".write(
                toFile: layers + "/l\(index).yaml", atomically: false, encoding: .utf8)
            below = "l\(index)"
        }
        let build = try Harness.run(["build", layers + "/l60.yaml", "--store", store])
        #expect(build.status == 0, "\(build.stderr.suffix(600))")
        let shell = try Harness.run(["shell", "l60", "--store", store, "--", "cat", "/etc/layer-1", "/etc/layer-60"])
        #expect(shell.stdout == "1\n60\n", "\(shell.stderr)")

        // The limit, on stacks written by hand: busybox as /bin/sh at the bottom, a file a layer.
        let stack = try CraftedStack("deep")
        try stack.layer("bottom") { tree in
            try tree.directory("bin")
            try FileManager.default.copyItem(atPath: "/bin/busybox", toPath: tree.root + "/bin/busybox")
            try tree.symlink("bin/sh", to: "busybox")
            try tree.directory("etc")
        }
        for index in 1...200 {
            try stack.layer("l\(index)") { tree in
                try tree.directory("etc")
                try tree.file("etc/layer-\(index)", "\(index)\n")
            }
        }
        let entered = try Harness.run(["shell", "l199", "--store", stack.store, "--", "/bin/sh", "-c", "cat /etc/layer-1 /etc/layer-199"])
        #expect(entered.status == 0 && entered.stdout == "1\n199\n", "\(entered.stdout)\(entered.stderr)")
        let refused = try Harness.run(["shell", "l200", "--store", stack.store, "--", "/bin/sh", "-c", "true"])
        #expect(refused.status == 3, "\(refused.stderr)")
        #expect(
            refused.stderr == "layerctl: 201 layers are more than the 200 that one overlay of layerctl's holds "
                + "(it names their folders in one page of mount options)\n")
    }
}
