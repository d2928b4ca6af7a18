import Foundation
import Testing

/// Every shell file of the project parses (sh -n, and busybox ash -n for what runs in an initramfs)
/// and passes shellcheck.
@Suite("Shell scripts")
struct ShellScriptTests {
    /// Files under the project's script folders that are shell: `*.sh`, or a `#!` line naming a shell.
    static func shellFiles() throws -> [String] {
        let root = Harness.packageRoot
        var files: [String] = [".ci/run"]
        for folder in ["boot", "demo", "scripts", "Benchmarks", "Tests/layerctlTests/Fixtures"] {
            guard let walker = FileManager.default.enumerator(atPath: root + "/" + folder) else { continue }
            for case let relative as String in walker where !relative.hasPrefix("out/") {
                let path = folder + "/" + relative
                var isDirectory: ObjCBool = false
                guard FileManager.default.fileExists(atPath: root + "/" + path, isDirectory: &isDirectory),
                    !isDirectory.boolValue
                else { continue }
                let head = (try? String(contentsOfFile: root + "/" + path, encoding: .utf8))?.prefix(64) ?? ""
                if path.hasSuffix(".sh") || (head.hasPrefix("#!") && head.prefix { $0 != "\n" }.hasSuffix("sh")) {
                    files.append(path)
                }
            }
        }
        return files.sorted()
    }

    @Test(
        "Every shell file passes shellcheck and sh -n",
        .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/shellcheck"), "needs shellcheck"))
    func shellcheck() throws {
        let files = try Self.shellFiles()
        #expect(files.contains("boot/layerctl.sh") && files.contains("boot/mkinitcpio/hooks/layerctl"), "\(files)")
        for file in files {
            let path = Harness.packageRoot + "/" + file
            let checked = try KernelMount.run(
                "/bin/sh", ["-c", "cd '\(Harness.packageRoot)' && exec shellcheck -x '\(file)'"])
            #expect(checked.status == 0, "\(file):\n\(checked.output)")
            // The shell is the #! line's, or a sourced file's `# shellcheck shell=` directive.
            let text = try String(contentsOfFile: path, encoding: .utf8)
            let firstLine = text.prefix { $0 != "\n" }
            let isBash =
                firstLine.hasPrefix("#!") ? firstLine.contains("bash") : text.contains("# shellcheck shell=bash")
            let parser = isBash ? "/bin/bash" : "/bin/sh"
            let parsed = try KernelMount.run(parser, ["-n", path])
            #expect(parsed.status == 0, "\(parser) -n \(file):\n\(parsed.output)")
            if file.hasPrefix("boot/") && parser == "/bin/sh"
                && FileManager.default.isExecutableFile(atPath: "/bin/busybox")
            {
                let ash = try KernelMount.run("/bin/busybox", ["ash", "-n", path])
                #expect(ash.status == 0, "busybox ash -n \(file):\n\(ash.output)")
            }
        }
    }

    @Test("Every file with a #! line is executable, as the README runs it; mkinitcpio's hook files, which it sources, are not")
    func executable() throws {
        let root = Harness.packageRoot
        var checked: [String] = []
        for folder in [".ci", "boot", "demo", "scripts", "Benchmarks"] {
            guard let walker = FileManager.default.enumerator(atPath: root + "/" + folder) else { continue }
            for case let relative as String in walker where !relative.hasPrefix("out/") {
                let path = folder + "/" + relative
                guard let handle = FileHandle(forReadingAtPath: root + "/" + path) else { continue }
                let head = (try? handle.read(upToCount: 2)) ?? nil
                try? handle.close()
                guard head == Data("#!".utf8) else { continue }
                let sourced = path.hasPrefix("boot/mkinitcpio/")
                #expect(
                    FileManager.default.isExecutableFile(atPath: root + "/" + path) != sourced,
                    "\(path) \(sourced ? "is sourced by mkinitcpio and should not be executable" : "has a #! line and is not executable")")
                checked.append(path)
            }
        }
        #expect(checked.contains("Benchmarks/share.sh") && checked.contains("scripts/registry-proxy.py"), "\(checked)")
    }

    @Test(
        "check-deps finds a package install-deps.sh leaves out, and a script that fails says which command",
        .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/dpkg"), "needs dpkg"))
    func dependencies() throws {
        let root = Harness.packageRoot
        let passes = try KernelMount.run("/bin/bash", [root + "/scripts/check-deps.sh"])
        #expect(passes.status == 0, "\(passes.output)")
        // The same list without squashfs-tools, whose mksquashfs the tests and benchmarks run.
        let list = try String(contentsOfFile: root + "/scripts/install-deps.sh", encoding: .utf8)
        let trimmed = try Harness.temporaryDirectory("deps") + "/install-deps.sh"
        try list.replacingOccurrences(of: " squashfs-tools ", with: " ").write(
            toFile: trimmed, atomically: false, encoding: .utf8)
        let fails = try KernelMount.run(
            "/usr/bin/env", ["LAYERCTL_INSTALL_DEPS=\(trimmed)", "bash", root + "/scripts/check-deps.sh"])
        #expect(fails.status == 1, "\(fails.output)")
        #expect(fails.output.contains("squashfs-tools (for mksquashfs"), "\(fails.output)")

        // A machine whose apt was upgraded since it was made: dpkg records the priority of the
        // package file ("important" for Debian 12's apt 2.6.2), the archive says "required". The
        // check failed on a fresh machine there ("apt (for apt-cache …)"); the archive's word counts.
        let upgraded = try Harness.temporaryDirectory("dpkg")
        for entry in try FileManager.default.contentsOfDirectory(atPath: "/var/lib/dpkg") where entry != "status" {
            try FileManager.default.createSymbolicLink(atPath: upgraded + "/" + entry, withDestinationPath: "/var/lib/dpkg/" + entry)
        }
        let status = try String(contentsOfFile: "/var/lib/dpkg/status", encoding: .utf8)
        let stanzas = status.components(separatedBy: "\n\n").map { stanza in
            stanza.hasPrefix("Package: apt\n") ? stanza.replacingOccurrences(of: "\nPriority: required\n", with: "\nPriority: important\n") : stanza
        }
        #expect(stanzas.contains { $0.hasPrefix("Package: apt\n") && $0.contains("\nPriority: important\n") })
        try stanzas.joined(separator: "\n\n").write(toFile: upgraded + "/status", atomically: false, encoding: .utf8)
        let afterUpgrade = try KernelMount.run(
            "/usr/bin/env", ["LAYERCTL_DPKG_ADMINDIR=\(upgraded)", "bash", root + "/scripts/check-deps.sh"])
        #expect(afterUpgrade.status == 0, "\(afterUpgrade.output)")

        // A command that fails in a script stops it with a line naming the script, line and command.
        let script = """
            source '\(root)/scripts/lib.sh'
            stop_on_error demo-script
            quiet sh -c 'echo what the tool said; exit 4'
            echo not reached
            """
        let failed = try KernelMount.run("/bin/bash", ["-c", script])
        #expect(failed.status == 4, "\(failed.output)")
        #expect(failed.output.contains("failed (4): sh -c"), "\(failed.output)")
        #expect(failed.output.contains("what the tool said"), "\(failed.output)")
        #expect(failed.output.contains("demo-script: line"), "\(failed.output)")
        #expect(!failed.output.contains("not reached"), "\(failed.output)")
    }
}
