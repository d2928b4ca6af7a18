import Alpm
import Foundation
import LayerBuilder
import LayerRecipe
import LayerShare
import Testing

@Suite("Command line")
struct HelpTests {
    @Test(
        "every command explains itself in full sentences",
        arguments: [
            "build", "lock", "export", "sbom", "push", "pull", "diff", "vm", "stage", "boot", "staged", "unstage", "changes",
            "ls", "inspect", "shell", "rm", "gc",
        ])
    func help(command: String) throws {
        let result = try Harness.run([command, "--help"])
        #expect(result.status == 0)
        #expect(result.stdout.contains("USAGE: layerctl \(command)"))
        // The abstract is a sentence: a capital letter first and a full stop at the end.
        let overview = try #require(result.stdout.split(separator: "\n").first { $0.hasPrefix("OVERVIEW: ") })
        #expect(overview.dropFirst("OVERVIEW: ".count).first?.isUppercase == true)
        #expect(overview.hasSuffix("."))
        // `changes` reads the running system, not a store.
        if command != "changes" { #expect(result.stdout.contains("The store that holds built layers.")) }
    }

    @Test("the lists these tests walk are every command `--help` names")
    func commandList() throws {
        let help = try Harness.run(["--help"]).stdout
        let listed = help.components(separatedBy: "SUBCOMMANDS:").last?.split(separator: "\n")
            .compactMap { $0.hasPrefix("  ") && !$0.hasPrefix("   ") && !$0.hasPrefix("  See ") ? $0.split(separator: " ").first.map(String.init) : nil } ?? []
        #expect(
            Set(listed) == [
                "build", "lock", "export", "sbom", "push", "pull", "diff", "vm", "stage", "boot", "staged", "unstage", "changes",
                "ls", "inspect", "shell", "rm", "gc",
            ], "\(listed)")
    }

    /// What a bug report needs, and what decides whether another layerctl's store is taken as it
    /// is: `--version` said "Unknown option".
    @Test("--version names the key format, the builder's and the unpack's rules, the lock format and libalpm")
    func version() throws {
        let result = try Harness.run(["--version"])
        #expect(result.status == 0 && result.stderr.isEmpty, "\(result.stderr)")
        #expect(
            result.stdout
                == "layerctl with layer key format \(LayerSpec.formatVersion), builder rules \(BuilderRules.version), unpack rules "
                + "\(ImagePull.unpackRules), lock format \(LockFile.formatVersion); libalpm \(AlpmHandle.version)\n")
        #expect(AlpmHandle.version.hasPrefix("13."))
    }

    @Test("a usage mistake exits with 2, an unknown layer with 3")
    func exitStatuses() throws {
        #expect(try Harness.run(["build"]).status == 2)
        #expect(try Harness.run(["frobnicate"]).status == 2)
        let store = try Harness.temporaryDirectory("store")
        let unknown = try Harness.run(["inspect", "nothing-here", "--store", store])
        #expect(unknown.status == 3)
        #expect(unknown.stderr == "layerctl: no layer named or keyed nothing-here in the store\n")
        let missing = try Harness.run(["build", "/nonexistent/x.yaml", "--store", store])
        #expect(missing.status == 3)
        #expect(missing.stderr.contains("layerctl: /nonexistent/x.yaml:1:1: no such layer file"))
        // The file name without .yaml, or with .yml; a folder, a pipe: each says what it is.
        let folder = try Harness.temporaryDirectory("layer-operands")
        try "from: scratch\n".write(toFile: folder + "/gaming.yaml", atomically: false, encoding: .utf8)
        #expect(mkfifo(folder + "/pipe.yaml", 0o644) == 0)
        for (operand, says) in [
            ("/gaming", "no such layer file (did you mean `gaming.yaml`?)"),
            ("/gaming.yml", "no such layer file (did you mean `gaming.yaml`?)"),
            ("/other", "no such layer file"),
            ("", "cannot read the layer file: it is a folder; give a layer file in it (NAME.yaml)"),
            ("/pipe.yaml", "cannot read the layer file: it is a pipe, not a file"),
        ] {
            let result = try Harness.run(["build", folder + operand, "--store", store])
            #expect(result.status == 3, "\(operand): \(result.stderr)")
            #expect(result.stderr == "layerctl: \(folder)\(operand):1:1: \(says)\n", "\(operand)")
        }
        // A layer file, or an image file, given where a layer of the store is meant: each says what
        // it is ("no layer named or keyed …/gaming.yaml in the store", they said).
        let demo = try Harness.temporaryDirectory("demo-store")
        let base = try Harness.demoLayers() + "/base.yaml"
        #expect(try Harness.run(["build", base, "--store", demo, "-o", folder + "/base.squashfs"]).status == 0)
        for (arguments, says) in [
            (["inspect", folder + "/base.yaml"],
             "no layer named or keyed \(folder)/base.yaml in the store (did you mean `base`? a layer is named by its layer file's name, without .yaml)"),
            (["shell", "base.yml"], "no layer named or keyed base.yml in the store (did you mean `base`? a layer is named by its layer file's name, without .yml)"),
            (["sbom", folder + "/base.squashfs"],
             "no layer named or keyed \(folder)/base.squashfs in the store (it is a file of this machine, not a layer: name a layer by its name or key; `diff`, `vm` and `stage` also take an image file)"),
            (["inspect", "other.yaml"], "no layer named or keyed other.yaml in the store"),
        ] {
            let result = try Harness.run(arguments + ["--store", demo])
            #expect(result.status == 3 && result.stderr == "layerctl: \(says)\n", "\(arguments): \(result.stderr)")
        }
        // A value an option cannot take is a usage mistake, however it is spelled (nan and inf were
        // refused only once the build had started, as an error of the system, 8).
        for (option, value, says) in [
            ("--timeout", "nan", "--timeout takes a number of seconds"), ("--timeout", "inf", "--timeout takes a number of seconds"),
            ("--timeout", "-5", "--timeout takes a number of seconds"), ("--max-processes", "-1", "--max-processes takes a number"),
            ("--memory", "200%", "--memory takes a size"), ("--memory", "12", "--memory takes a size"),
        ] {
            let result = try Harness.run(["build", "/nonexistent/x.yaml", "--store", store, "\(option)=\(value)"])
            #expect(result.status == 2, "\(option) \(value): \(result.stderr)")
            #expect(result.stderr.contains(says), "\(option) \(value): \(result.stderr)")
        }
        // So are options that exclude each other, before anything is made (--check's were refused
        // once the build had started, as an error of the system, 8, and the store made).
        let unmade = folder + "/unmade-store"
        for (options, says) in [
            (["--check", "--cache-from", "127.0.0.1:1/cache"], "--check builds in stores of its own: it takes no --cache-from, --cache-to or -o"),
            (["--check", "-o", folder + "/x.squashfs"], "--check builds in stores of its own: it takes no --cache-from, --cache-to or -o"),
            (["--offline", "--cache-from", "127.0.0.1:1/cache"],
             "--offline fetches nothing over the network, and --cache-from and --cache-to name a registry: give one or the other"),
            (["--offline", "--cache-to", "127.0.0.1:1/cache"],
             "--offline fetches nothing over the network, and --cache-from and --cache-to name a registry: give one or the other"),
        ] {
            let result = try Harness.run(["build", base, "--store", unmade] + options)
            #expect(result.status == 2 && result.stderr.contains(says), "\(options): \(result.stderr)")
            #expect(!FileManager.default.fileExists(atPath: unmade), "\(options)")
        }
    }

    @Test("started in a folder that was removed, an error says that relative paths find nothing in it")
    func removedFolder() throws {
        let work = try Harness.temporaryDirectory("gone")
        let layers = try Harness.demoLayers()
        // As after a fresh clone: the shell's folder is removed and made again, with the file in it.
        let script = """
            d=$(mktemp -d "$1/cwd.XXXXXX") && cd "$d" && rmdir "$d" && mkdir "$d" && cp "$2" "$d/base.yaml" \
            && shift 2 && exec "$@"
            """
        let run = { (arguments: [String]) in
            try Harness.run(["-c", script, "sh", work, layers + "/base.yaml", Harness.executable] + arguments, tool: "/bin/sh")
        }
        let hint = " (the current folder was removed: a relative path finds nothing in it)\n"
        let relative = try run(["build", "base.yaml", "--store", work + "/store"])
        #expect(relative.status == 3)
        #expect(relative.stderr == "layerctl: base.yaml:1:1: no such layer file" + hint)
        let store = try run(["ls", "--store", "store", "--json"])
        #expect(store.status != 0)
        #expect(store.stderr.hasPrefix("layerctl: ") && store.stderr.hasSuffix(hint), "\(store.stderr)")
        #expect(store.stdout.contains("the current folder was removed"), "\(store.stdout)")
        // An absolute path works from there.
        #expect(mkdir(work + "/empty-store", 0o755) == 0)
        #expect(try run(["ls", "--store", work + "/empty-store"]).status == 0)
    }

    /// Namespaced work is asked for through the environment, never through a hidden subcommand.
    @Test("no hidden subcommands; a malformed work request and an orphaned one each fail with one line")
    func namespacedWork() throws {
        for hidden in ["__build-layer", "__shell"] {
            #expect(try Harness.run([hidden, "/tmp/job.json"]).status == 2)
        }
        let variable = "LAYERCTL_NAMESPACED_WORK"
        let malformed = try Harness.run(["ls"], environment: [variable: "build"])
        #expect(malformed.status == 2)
        #expect(malformed.stderr == "layerctl: \(variable): not a request: build\n")
        // A parent that is not ours (pid 1 never started this test's process) is refused: the work
        // would outlive whoever asked for it.
        let orphan = try Harness.run(["ls"], environment: [variable: "shell 1 /nonexistent/job.json"])
        #expect(orphan.status == 1)
        #expect(orphan.stderr == "layerctl: abandoned: the parent process is gone\n")
        #expect(orphan.stdout.isEmpty)
    }

    /// Every command but `shell` (whose output is its command's) has `--json`, in one style: one
    /// line per document; a failure is a document too.
    @Test("--json everywhere but shell; one line per document; a failure is {\"error\": …} on stdout")
    func json() throws {
        for command in [
            "build", "lock", "export", "sbom", "push", "pull", "diff", "vm", "stage", "boot", "staged", "unstage", "changes", "ls",
            "inspect", "rm", "gc",
        ] {
            #expect(try Harness.run([command, "--help"]).stdout.contains("--json"), "\(command) has no --json")
        }
        let store = try Harness.temporaryDirectory("store")
        let list = try Harness.run(["ls", "--store", store, "--json"])
        #expect(list.status == 0 && list.stdout == "[]\n", "\(list.stdout)")
        let unknown = try Harness.run(["inspect", "nothing-here", "--store", store, "--json"])
        #expect(unknown.status == 3)
        #expect(unknown.stderr == "layerctl: no layer named or keyed nothing-here in the store\n")
        #expect(
            unknown.stdout
                == #"{"error":{"code":"input","exitStatus":3,"message":"no layer named or keyed nothing-here in the store"}}"#
                + "\n")
        #expect(try Harness.run(["vm", "x", "--json"]).status == 2)
    }
}
