import Foundation
import Glibc
import LayerEntries
import LayerSupport
import Testing

/// Every kind of entry, xattrs, and the merge without root. Part of the serialized "Merge oracle" suite.
extension MergeOracleTests {
    @Test("Symlinks, hard links, devices, fifos, sockets, empty and sparse files, long and non-UTF-8 names")
    func specialEntries() throws {
        let stack = try CraftedStack("special")
        try stack.layer("bottom") { t in
            try t.directory("data")
            try t.file("data/linked", "three names\n")
            try t.hardLink("data/linked-2", to: "data/linked")
            try t.hardLink("data/linked-3", to: "data/linked")
            try t.file("data/pair", "two names\n")
            try t.hardLink("data/pair-2", to: "data/pair")
        }
        try stack.layer("top") { t in
            try t.directory("data")
            try t.whiteout("data/linked-3")
            try t.directory("dev")
            try t.device("dev/null", character: true, major: 1, minor: 3, mode: 0o666)
            try t.device("dev/sda1", character: false, major: 8, minor: 1)
            try t.device("dev/wide", character: true, major: 300, minor: 70_000)
            try t.fifo("dev/fifo")
            try t.socket("dev/socket")
            try t.symlink("data/relative", to: "linked")
            try t.symlink("data/absolute", to: "/etc/hostname")
            try t.symlink("data/dangling", to: "../nowhere/at/all")
            try t.symlink(Array("data/odd-target".utf8), to: Array("latin1-".utf8) + [0xE9, 0xFF, 0x01])
            try t.file("data/empty", "")
            try t.sparse("data/sparse", size: 8 << 20, data: "in the middle", at: 4 << 20)
            try t.file("data/" + String(repeating: "n", count: 255), "a name of 255 bytes\n")
            try t.file(Array("data/latin1-".utf8) + [0xE9, 0xFF, 0x01], Array("not UTF-8\n".utf8))
            try t.directory(Array("data/dir-".utf8) + [0xFE])
        }
        try expectSameAsOverlay(stack, top: "top")
    }

    @Test(
        "Hard links in any order: across folders both ways, 100 names of one file, kernel whiteouts of removed files, a link to a copy-up, one name of a pair removed"
    )
    func hardLinks() throws {
        let stack = try CraftedStack("hardlinks")
        try stack.layer("bottom") { t in
            // The name a depth-first walk meets first (/x/a/f) is not the first breadth-first (/x/z).
            for folder in ["x", "x/a", "y", "y/sub", "farm", "pkg", "pkg/lib", "pkg/lib/deep", "pair", "pair/in"] {
                try t.directory(folder)
            }
            try t.file("x/a/f", "deep name first\n")
            try t.hardLink("x/z", to: "x/a/f")
            // And the other way round: the shallow name sorts and walks first.
            try t.file("y/0-shallow", "shallow name first\n")
            try t.hardLink("y/sub/deep", to: "y/0-shallow")
            // A farm, as git and perl ship them: 100 names of one file in 10 folders.
            try t.file("farm/origin", "one file, a hundred names\n", mode: 0o755)
            for d in 0..<10 { try t.directory("farm/d\(d)") }
            for i in 0..<99 { try t.hardLink("farm/d\(i % 10)/n\(i)", to: "farm/origin") }
            // A package's files, removed above, and a file it leaves.
            try t.file("pkg/lib/deep/one", "1\n")
            try t.file("pkg/lib/deep/kept", "kept\n")
            try t.file("pkg/lib/two", "2\n")
            try t.file("pkg/three", "3\n")
            // A linked pair whose first name goes above; a file that gets a new name above.
            try t.file("pair/in/a", "a pair\n")
            try t.hardLink("pair/b", to: "pair/in/a")
            try t.file("pair/lower", "one name below\n")
        }
        try stack.layer("top") { t in
            try KernelMount.overlayWrite(
                lowerdir: stack.tree(0), upper: t.root,
                script: """
                    rm pkg/lib/deep/one pkg/lib/two pkg/three
                    rm pair/in/a
                    ln pair/lower pair/in/linked-above
                    mkdir -p new/a && echo new > new/a/f && ln new/a/f new/z
                    """)
        }
        // overlayfs gave the three whiteouts one inode: they are hard links of one another.
        var whiteouts = Set<UInt64>()
        for path in ["pkg/lib/deep/one", "pkg/lib/two", "pkg/three"] {
            var st = stat()
            #expect(lstat(stack.tree(1) + "/" + path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFCHR)
            whiteouts.insert(UInt64(st.st_ino))
        }
        #expect(whiteouts.count == 1, "the kernel made \(whiteouts.count) whiteout inodes")
        try expectSameAsOverlay(stack, top: "top")

        // `changes` reads the kernel's upper folder over the lower one.
        let changes = try Harness.run(["changes", "--upper", stack.tree(1), "--lower", stack.tree(0)])
        #expect(changes.status == 0, "\(changes.stderr)")
        let lines = changes.stdout.split(separator: "\n").filter { $0.hasPrefix("  ") }.map {
            $0.trimmingCharacters(in: .whitespaces)
        }
        // A copy-up that only gained a name is no change of the file.
        #expect(
            lines == [
                "A /new", "A /new/a", "A /new/a/f", "A /new/z", "D /pair/in/a", "A /pair/in/linked-above",
                "D /pkg/lib/deep/one", "D /pkg/lib/two", "D /pkg/three",
            ], "\(changes.stdout)")
    }

    @Test("xattrs are kept (user, trusted, security.capability); overlayfs's own are dropped; ACLs are reported")
    func extendedAttributes() throws {
        let stack = try CraftedStack("xattrs")
        // cap_net_raw+ep as a version 2 capability: magic|effective, permitted, inheritable.
        let capability: [UInt8] = [0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        // user::rw- user:1000:r-- group::r-- mask::r-- other::r--
        var acl: [UInt8] = [2, 0, 0, 0]
        for (tag, perm, id) in [
            (0x01, 6, UInt32.max), (0x02, 4, 1000), (0x04, 4, UInt32.max), (0x10, 4, UInt32.max), (0x20, 4, UInt32.max),
        ] {
            acl += [UInt8(tag), 0, UInt8(perm), 0] + [0, 8, 16, 24].map { UInt8(truncatingIfNeeded: id >> $0) }
        }
        try stack.layer("bottom") { t in
            try t.directory("usr")
            try t.file("usr/ping", "#!/bin/sh\n", mode: 0o755)
            try t.xattr("usr/ping", "security.capability", capability)
            try t.file("usr/tagged", "tagged\n")
            try t.xattr("usr/tagged", "user.origin", Array("bottom".utf8))
            try t.xattr("usr/tagged", "user.empty", [])
        }
        try stack.layer("top") { t in
            try t.directory("usr")
            try t.xattr("usr", "user.dir", Array("on a directory".utf8))
            try t.file("usr/retagged", "retagged\n")
            try t.xattr("usr/retagged", "user.binary", [0, 1, 2, 255])
            try t.xattr("usr/retagged", "trusted.kept", Array("yes".utf8))
            try t.xattr("usr/retagged", Array("user.".utf8) + [0xFF, 0xFE], Array("a name that is not UTF-8".utf8))
            try t.xattr("usr", Array("trusted.".utf8) + [0xC3, 0x28], [1])
            try t.xattr("usr/retagged", "trusted.overlay.origin", [0, 1])
            try t.file("usr/acl", "with an ACL\n")
            try t.xattr("usr/acl", "system.posix_acl_access", acl)
        }
        let stderr = try expectSameAsOverlay(stack, top: "top")
        #expect(stderr.contains("squashfs cannot store system.* attributes"), "\(stderr)")
        #expect(stderr.contains("usr/acl"), "\(stderr)")
        let overlay = try KernelMount.overlay(lowerdir: stack.lowerdir())
        defer { KernelMount.unmount(overlay) }
        #expect(try TreeSnapshot(overlay).systemAttributes["/usr/acl"] == ["system.posix_acl_access"])
    }

    @Test("Without root, the merge reads the layers' manifests, or else the opaque directories the store recorded")
    func rootless() throws {
        for recorded in [true, false] {
            let stack = try CraftedStack(recorded ? "rootless" : "rootless-unrecorded")
            try stack.layer("bottom", recordOpaque: recorded) { t in
                try t.directory("opt")
                try t.directory("opt/app")
                try t.file("opt/app/old", "hidden by the opaque directory\n")
                try t.file("opt/gone", "whited out\n")
            }
            try stack.layer("top", recordOpaque: recorded) { t in
                try t.directory("opt")
                try t.directory("opt/app")
                try t.opaque("opt/app")
                try t.file("opt/app/new", "new\n")
                try t.whiteout("opt/gone")
            }
            let out = try Harness.temporaryDirectory("rootless")
            chmod(stack.store, 0o755)
            chmod(out, 0o777)
            // A store nobody owns: the folders that hold the trees are their owner's alone.
            for folder in ["layers", "tmp"] { chown(stack.store + "/" + folder, 65534, 65534) }
            let exportAsNobody = { (name: String) in
                try KernelMount.run(
                    "/usr/bin/setpriv",
                    [
                        "--reuid=65534", "--regid=65534", "--clear-groups", "--", Harness.executable, "export", "top",
                        "--store", stack.store, "-o", out + "/" + name,
                    ])
            }
            let asRoot = try Harness.run([
                "export", "top", "--store", stack.store, "-o", out + "/root.squashfs", "--no-block-cache",
            ])
            #expect(asRoot.status == 0, "\(asRoot.stderr)")
            // Layers stored before manifests were kept have none that nobody could read.
            let layers = stack.store + "/layers"
            for key in try FileManager.default.contentsOfDirectory(atPath: layers) {
                try FileManager.default.removeItem(atPath: layers + "/" + key + "/manifest")
            }
            let before = try exportAsNobody("before.squashfs")
            #expect(
                try Harness.run(["export", "top", "--store", stack.store, "-o", out + "/manifests.squashfs"]).status
                    == 0)
            let rootImage = FileManager.default.contents(atPath: out + "/root.squashfs")
            if recorded {
                #expect(before.status == 0, "\(before.output)")
                // The store's block cache is root's: nobody exports without it, and says so; it says
                // too that trusted.* attributes are out of its reach.
                #expect(before.output.contains("exporting without the block cache"), "\(before.output)")
                #expect(before.output.contains("trusted.* attributes cannot be read"), "\(before.output)")
                let image = FileManager.default.contents(atPath: out + "/before.squashfs")
                #expect(image != nil && image == rootImage)
            } else {
                #expect(before.status == 4, "\(before.output)")  // a privilege is missing
                #expect(before.output.contains("has no record of its opaque directories"), "\(before.output)")
            }
            // Root's export left the manifests, which record opaque directories and trusted.*
            // attributes: now nobody needs neither the record nor the privilege.
            let after = try exportAsNobody("after.squashfs")
            #expect(after.status == 0, "\(after.output)")
            #expect(!after.output.contains("trusted.* attributes cannot be read"), "\(after.output)")
            let image = FileManager.default.contents(atPath: out + "/after.squashfs")
            #expect(image != nil && image == rootImage)
            // Root's store is root's: nobody is told so, not that a ref is damaged.
            for folder in ["layers", "tmp"] { chown(stack.store + "/" + folder, 0, 0) }
            let refused = try exportAsNobody("refused.squashfs")
            #expect(refused.status == 4, "\(refused.output)")
            #expect(refused.output.contains("the store's layers are its owner's alone"), "\(refused.output)")
        }
    }
}
