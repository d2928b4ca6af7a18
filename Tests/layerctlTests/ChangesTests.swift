import Foundation
import LayerRecipe
import Testing

/// `layerctl changes` on a real overlay: known changes are made through a kernel overlay mount,
/// then its upper directory is read against the lower one.
@Suite("What changed this boot", .serialized, .enabled(if: Harness.isRoot, "needs root to mount overlayfs"))
struct ChangesTests {
    static func desc(_ name: String, _ version: String, dependency: Bool = false) -> String {
        "%NAME%\n\(name)\n\n%VERSION%\n\(version)\n\n" + (dependency ? "%REASON%\n1\n\n" : "")
    }

    @Test(
        "files added, modified (with what differs) and deleted, whiteouts and opaque directories, and package changes")
    func knownChanges() throws {
        let folder = try Harness.temporaryDirectory("changes")
        let (lower, upper, work, mnt) = (folder + "/lower", folder + "/upper", folder + "/work", folder + "/mnt")
        let local = "var/lib/pacman/local"
        let installed = [
            ("nano-8.0-1", Self.desc("nano", "8.0-1")), ("game-1.0-1", Self.desc("game", "1.0-1")),
            ("lib-2.0-1", Self.desc("lib", "2.0-1", dependency: true)), ("old-3.0-1", Self.desc("old", "3.0-1")),
            ("same-1.0-1", Self.desc("same", "1.0-1")),
        ]
        var script = """
            mkdir -p '\(lower)/etc' '\(lower)/usr/bin' '\(lower)/usr/share/doc' '\(lower)/\(local)' '\(upper)' '\(work)' '\(mnt)'
            cd '\(lower)'
            echo demo >etc/hostname; echo keep >etc/keep; echo m >etc/chmodme; chmod 644 etc/chmodme
            echo o >etc/owner; echo a >etc/attr; setfattr -n user.x -v 1 etc/attr; echo t >etc/typechange
            echo tool >usr/bin/tool; echo q >"etc/it's gone"; echo a >usr/share/doc/a; echo b >usr/share/doc/b; ln -s target link
            echo 9 >\(local)/ALPM_DB_VERSION

            """
        for (directory, text) in installed {
            script += "mkdir \(local)/\(directory) && printf '%s' '\(text)' >\(local)/\(directory)/desc\n"
        }
        script += """
            mount -t overlay overlay -o 'lowerdir=\(lower),upperdir=\(upper),workdir=\(work)' '\(mnt)'
            trap "cd / && umount '\(mnt)'" EXIT
            cd '\(mnt)'
            echo gaming >etc/hostname; echo new >etc/added; chmod 600 etc/chmodme; chown 1:1 etc/owner
            setfattr -n user.x -v 2 etc/attr; touch etc/keep; cat etc/keep >/dev/null
            rm etc/typechange && mkdir etc/typechange
            rm usr/bin/tool "etc/it's gone"; rm -r usr/share/doc && mkdir usr/share/doc && echo c >usr/share/doc/c
            rm link && ln -s other link; ln -s "$(printf 'tab\tbed')" etc/tablink; printf '\\000bin' > etc/blob
            rm -r \(local)/nano-8.0-1
            mkdir \(local)/htop-3.3-1 && printf '%s' '\(Self.desc("htop", "3.3-1"))' >\(local)/htop-3.3-1/desc
            rm -r \(local)/game-1.0-1 && mkdir \(local)/game-1:0.9-1 && printf '%s' '\(Self.desc("game", "1:0.9-1"))' >\(local)/game-1:0.9-1/desc
            rm -r \(local)/old-3.0-1 && mkdir \(local)/old-2.9-1 && printf '%s' '\(Self.desc("old", "2.9-1"))' >\(local)/old-2.9-1/desc
            printf '%s' '\(Self.desc("lib", "2.0-1"))' >\(local)/lib-2.0-1/desc
            """
        try BootMachine.shell(script)

        let result = try Harness.run(["changes", "--upper", upper, "--lower", lower, "--json"])
        #expect(result.status == 0, "\(result.stderr)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
        let files = (object["files"] as? [[String: Any]] ?? []).map { file in
            let differences = file["differences"] as? [String] ?? []
            return "\(file["change"] ?? "") \(file["path"] ?? "")"
                + (differences.isEmpty ? "" : " " + differences.joined(separator: ","))
        }
        #expect(
            files == [
                "added /etc/added", "modified /etc/attr xattrs", "added /etc/blob", "modified /etc/chmodme mode",
                "modified /etc/hostname content,size", "deleted /etc/it's gone", "modified /etc/owner owner", "added /etc/tablink",
                "modified /etc/typechange type",
                "modified /link target", "deleted /usr/bin/tool", "deleted /usr/share/doc/a",
                "deleted /usr/share/doc/b",
                "added /usr/share/doc/c", "deleted /\(local)/game-1.0-1", "added /\(local)/game-1:0.9-1",
                "added /\(local)/game-1:0.9-1/desc", "added /\(local)/htop-3.3-1", "added /\(local)/htop-3.3-1/desc",
                "modified /\(local)/lib-2.0-1/desc content,size", "deleted /\(local)/nano-8.0-1",
                "added /\(local)/old-2.9-1", "added /\(local)/old-2.9-1/desc", "deleted /\(local)/old-3.0-1",
            ], "\(files)")
        let packages = (object["packages"] as? [[String: Any]] ?? []).map {
            "\($0["change"] ?? "") \($0["name"] ?? "") \($0["before"] ?? "-") \($0["after"] ?? "-")"
        }
        // An epoch outranks any version: 1:0.9-1 is newer than 1.0-1, as pacman has it.
        #expect(
            packages == [
                "upgraded game 1.0-1 1:0.9-1", "added htop - 3.3-1", "reason lib dependency explicit",
                "removed nano 8.0-1 -", "downgraded old 3.0-1 2.9-1",
            ], "\(packages)")

        let text = try Harness.run(["changes", "--upper", upper, "--lower", lower])
        #expect(text.status == 0)
        #expect(
            text.stdout.hasPrefix("packages: 1 installed, 1 removed, 1 upgraded, 1 downgraded, 1 changed reason\n"),
            "\(text.stdout)")
        #expect(text.stdout.contains("  M /etc/hostname (content, size)\n"), "\(text.stdout)")
        #expect(text.stdout.contains("files: 10 added"), "\(text.stdout)")

        // The draft: packages and the small unowned text files; the rest named in a comment.
        let draft = try Harness.run(["changes", "--upper", upper, "--lower", lower, "--layer-file", "gaming"])
        #expect(draft.status == 0, "\(draft.stderr)")
        let drafted = draft.stdout
        for line in [
            "from: gaming\npackages: [htop]\nremove: [nano]\n# 1 package upgraded since boot (game): as pacman -Syu, when this builds\nupgrade: true\nfiles:\n",
            "  - path: /etc/added\n    content: \"new\\n\"\n",
            "  - path: /etc/chmodme\n    content: \"m\\n\"\n    mode: \"0600\"\n",
            "  - path: /etc/hostname\n    content: \"gaming\\n\"\n",
            "  - path: /etc/owner\n    content: \"o\\n\"\n    owner: \"1:1\"\n",
            "  - path: /usr/share/doc/c\n    content: \"c\\n\"\n",
            "#   package old downgraded to 2.9-1: a build takes the repository's version\n",
            "#   /etc/typechange (a file that became a folder)\n", "  - path: /link\n    link: \"other\"\n",
            "#   /etc/tablink (added symlink whose target is not text)\n",
            "#   /etc/blob (added; not text, or over 64 KiB: copy it beside the layer file and name it with `source:`)\n",
            // What was removed, by a command that removes it again, whatever its name.
            "run:\n  # Removed since boot, and no package's.\n  - \"rm -f -- '/etc/it'\\\\''s gone'\"\n  - \"rm -f -- /usr/bin/tool\"\n"
                + "  - \"rm -f -- /usr/share/doc/a\"\n  - \"rm -f -- /usr/share/doc/b\"\n",
        ] {
            #expect(drafted.contains(line), "\(line) is not in:\n\(drafted)")
        }
        #expect(!drafted.contains("/var/lib/pacman"), "\(drafted)")
        // It is a layer file layerctl reads.
        let layers = try Harness.temporaryDirectory("draft")
        try "from: scratch\narch: x86_64\nrepos:\n  - name: demo\n    servers: [repo/$repo]\n".write(
            toFile: layers + "/gaming.yaml", atomically: false, encoding: .utf8)
        try drafted.write(toFile: layers + "/draft.yaml", atomically: false, encoding: .utf8)
        let recipe = try Recipe.load(layers + "/draft.yaml")
        #expect(recipe.target.packages.map(\.value) == ["htop"])
        #expect(recipe.target.upgrade?.value == true)
        #expect(recipe.target.files.count == 7)
        #expect(recipe.target.files.first { $0.path == "/link" }?.content == .link("other"))
        #expect(recipe.target.files.first { $0.path == "/etc/hostname" }?.content == .inline("gaming\n"))
        #expect(recipe.target.run.first?.value == "rm -f -- '/etc/it'\\''s gone'")

        let notBooted = try Harness.run(["changes", "--upper", folder + "/nothing"])
        #expect(notBooted.status == 3)
        #expect(notBooted.stderr.contains("is not a directory"), "\(notBooted.stderr)")
    }

    /// A draft is a layer file, which goes into git and to whoever builds it: what a boot makes for
    /// this machine alone (its id, its SSH host keys) and a user's private key stay out of it, and
    /// so does pacman's `.pacnew`, whose place is the file it updates.
    @Test("names that hold control characters, marks that reorder text or bytes that are not UTF-8 print as their bytes, one line each")
    func hostileNames() throws {
        let folder = try Harness.temporaryDirectory("changes-names")
        let (lower, upper) = (folder + "/lower", folder + "/upper")
        for path in [lower, upper] { #expect(mkdir(path, 0o755) == 0) }
        let names: [[UInt8]] = [
            Array("x\n  D forged".utf8), Array("\u{1B}]0;owned\u{07}".utf8), Array("\u{202E}txt.exe".utf8),
            Array("odd-".utf8) + [0xFE], Array("odd-".utf8) + [0xFF],
        ]
        for name in names {
            let fd = withC(Array(upper.utf8) + [0x2F] + name) { open($0, O_WRONLY | O_CREAT | O_EXCL, 0o644) }
            #expect(fd >= 0)
            close(fd)
        }
        let result = try Harness.run(["changes", "--upper", upper, "--lower", lower])
        #expect(result.status == 0, "\(result.stderr)")
        let lines = result.stdout.split(separator: "\n").map(String.init)
        for shown in ["/x\\x0a  D forged", "/\\x1b]0;owned\\x07", "/\\xe2\\x80\\xaetxt.exe", "/odd-\\xfe", "/odd-\\xff"] {
            #expect(lines.contains("  A " + shown), "\(shown) in \(result.stdout)")
        }
        let shownScalars = result.stdout.unicodeScalars.filter {
            ($0.value < 0x20 && $0 != "\n") || (0x7F...0x9F).contains($0.value) || (0x202A...0x202E).contains($0.value)
                || $0.value == 0xFFFD
        }
        #expect(shownScalars.isEmpty, "\(shownScalars.map(\.value))")
        let json = try Harness.run(["changes", "--upper", upper, "--lower", lower, "--json"])
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
        let bytes = (object["files"] as? [[String: Any]] ?? []).compactMap { file in
            (file["pathBase64"] as? String).flatMap { Data(base64Encoded: $0) }.map { [UInt8]($0) }
        }
        #expect(bytes == [Array("/odd-".utf8) + [0xFE], Array("/odd-".utf8) + [0xFF]], "\(json.stdout)")
    }

    @Test("the draft leaves out the machine id, systemd's stamps, caches and histories in homes, SSH host keys, private keys, .pacnew files and a generated resolv.conf, naming the last four")
    func draftWithholds() throws {
        let folder = try Harness.temporaryDirectory("withheld")
        let (lower, upper, work, mnt) = (folder + "/lower", folder + "/upper", folder + "/work", folder + "/mnt")
        let key = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----"
        try BootMachine.shell(
            """
            mkdir -p '\(lower)/etc/ssh' '\(lower)/root' '\(lower)/var' '\(upper)' '\(work)' '\(mnt)'
            echo uninitialized >'\(lower)/etc/machine-id'; echo '[options]' >'\(lower)/etc/pacman.conf'
            mount -t overlay overlay -o 'lowerdir=\(lower),upperdir=\(upper),workdir=\(work)' '\(mnt)'
            trap "cd / && umount '\(mnt)'" EXIT
            cd '\(mnt)'
            echo 0123456789abcdef0123456789abcdef >etc/machine-id; echo stamp >etc/.updated; echo stamp >var/.updated
            printf '%s\\n' '\(key)' >etc/ssh/ssh_host_ed25519_key; echo 'ssh-ed25519 AAAA root@host' >etc/ssh/ssh_host_ed25519_key.pub
            mkdir -p root/.ssh && printf '%s\\n' '\(key)' >root/.ssh/id_ed25519
            echo '[options] # new' >etc/pacman.conf.pacnew; echo mine >etc/kept
            printf '# Generated by NetworkManager\\nnameserver 192.168.1.1\\n' >etc/resolv.conf
            mkdir -p root/.cache/pip home/arch; echo cached >root/.cache/pip/x; echo ls >root/.bash_history
            echo q >root/.lesshst; echo py >home/arch/.python_history; echo set >home/arch/.vimrc
            """)
        let draft = try Harness.run(["changes", "--upper", upper, "--lower", lower, "--layer-file", "base"])
        #expect(draft.status == 0, "\(draft.stderr)")
        #expect(
            draft.stdout.hasSuffix("""
                from: base
                files:
                  - path: /etc/kept
                    content: "mine\\n"
                  - path: /home/arch/.vimrc
                    content: "set\\n"
                # Not drafted:
                #   /etc/pacman.conf.pacnew (added; pacman's new version of /etc/pacman.conf, which it kept as it was: merge what changed into /etc/pacman.conf)
                #   /etc/resolv.conf (added; a network manager wrote it at boot for the network it found; write it by hand if it is meant)
                #   /etc/ssh/ssh_host_ed25519_key (added; this machine's SSH host key, which each machine makes at its first boot, and a build removes)
                #   /etc/ssh/ssh_host_ed25519_key.pub (added; this machine's SSH host key, which each machine makes at its first boot, and a build removes)
                #   /root/.ssh/id_ed25519 (added; a private key: a layer file is read by whoever builds it, and its image by whoever boots it; copy it to the machines that need it instead)

                """), "\(draft.stdout)")
        #expect(!draft.stdout.contains("b3BlbnNzaC1rZXktdjEAAAAA"))
    }

    /// `pacman -S docker` on a running image makes the group docker, through systemd-sysusers'
    /// libalpm hook; the draft installs docker, whose install makes it again in the build, where a
    /// `groupadd docker` would then fail. What a sysusers.d file declares is left to the package.
    @Test("users and groups that a package's sysusers.d declares are left to the package; a user's own, and joining such a group, are drafted")
    func packagedAccounts() throws {
        let folder = try Harness.temporaryDirectory("packaged")
        let (lower, upper, work, mnt) = (folder + "/lower", folder + "/upper", folder + "/work", folder + "/mnt")
        try BootMachine.shell(
            """
            mkdir -p '\(lower)/etc' '\(lower)/usr/lib/sysusers.d' '\(upper)' '\(work)' '\(mnt)'
            printf 'root:x:0:0::/root:/bin/sh\\narch:x:1000:1000::/home/arch:/bin/sh\\n' >'\(lower)/etc/passwd'
            printf 'root:x:0:\\narch:x:1000:\\n' >'\(lower)/etc/group'
            mount -t overlay overlay -o 'lowerdir=\(lower),upperdir=\(upper),workdir=\(work)' '\(mnt)'
            trap "cd / && umount '\(mnt)'" EXIT
            cd '\(mnt)'
            printf 'g docker 968 -\\nu dockerd 967 "Docker" /var/lib/docker\\n' >usr/lib/sysusers.d/docker.conf
            echo 'dockerd:x:967:967:Docker:/var/lib/docker:/usr/bin/nologin' >>etc/passwd
            echo 'steve:x:1001:1001::/home/steve:/bin/sh' >>etc/passwd
            printf 'docker:x:968:arch\\ndockerd:x:967:\\nsteve:x:1001:\\n' >>etc/group
            """)
        let draft = try Harness.run(["changes", "--upper", upper, "--lower", lower, "--layer-file", "base"])
        #expect(draft.status == 0, "\(draft.stderr)")
        let run = draft.stdout.split(separator: "\n").filter { $0.hasPrefix("  - \"") }
        #expect(
            run == [
                "  - \"groupadd -g 1001 steve\"", "  - \"usermod -a -G docker arch\"",
                "  - \"useradd -M -u 1001 -g steve -d /home/steve -s /bin/sh steve\"",
            ], "\(draft.stdout)")
    }

    /// Users and passwords are what a running system changes most, and what its next boot forgets:
    /// the draft makes them again with shadow's tools (the account files are each every user's,
    /// so a `files:` copy of one would undo any other layer's users), and a build of it gives the
    /// accounts the running system had.
    @Test(
        "users, groups, passwords and memberships changed since boot are drafted as the commands that make them again, and a build of the draft has the same accounts",
        .enabled(if: Harness.canBuild, Harness.cannotBuildReason))
    func accounts() throws {
        let folder = try Harness.temporaryDirectory("accounts")
        try (Harness.demoRoot(["filesystem", "busybox", "shadow"]) + """
            files:
              - path: /etc/skel/.profile
                content: "PS1='$ '\\n"
            run:
              - pwconv && grpconv
              - groupadd -g 998 wheel
              - useradd -m -u 1000 -G wheel -s /bin/sh -p '' arch
              - useradd -m -u 1002 -s /bin/sh leaver

            """).write(toFile: folder + "/accounts.yaml", atomically: false, encoding: .utf8)
        let store = try Harness.temporaryDirectory("store")
        let build = try Harness.run(["build", folder + "/accounts.yaml", "--store", store])
        #expect(build.status == 0, "\(build.stderr)")
        let (lower, upper, work, mnt) = (folder + "/lower", folder + "/upper", folder + "/work", folder + "/mnt")
        let export = try Harness.run(["export", "accounts", "--format", "dir", "-o", lower, "--store", store])
        #expect(export.status == 0, "\(export.stderr)")
        // What a user does on the running system, in its root.
        // The accounts, all but the day of each password's last change, which is the build's (none).
        let show = "cat /etc/passwd /etc/group /etc/gshadow; cut -d: -f1,2,4- /etc/shadow; stat -c \"%n %u:%g %a\" /home/*"
        let running = try BootMachine.shell("""
            mkdir -p '\(upper)' '\(work)' '\(mnt)'
            mount -t overlay overlay -o 'lowerdir=\(lower),upperdir=\(upper),workdir=\(work)' '\(mnt)'
            trap "umount '\(mnt)'" EXIT
            chroot '\(mnt)' /bin/sh -euc '
                groupadd -g 1500 games
                useradd -m -u 1001 -G wheel,games -c "Bob B" -s /bin/sh bob
                echo "bob:\\$6\\$x\\$y" | chpasswd -e
                echo "arch:\\$6\\$a\\$b" | chpasswd -e
                usermod -aG games -s /usr/bin/nologin arch
                gpasswd -d arch wheel >&2
                userdel leaver
                echo notes >/home/bob/notes
                \(show)'
            """)
        let draft = try Harness.run(["changes", "--upper", upper, "--lower", lower, "--layer-file", "accounts"])
        #expect(draft.status == 0, "\(draft.stderr)")
        #expect(
            draft.stdout.hasSuffix("""
                from: accounts
                run:
                  # Users and groups made or changed since boot, with their password hashes, as /etc/shadow has them.
                  - "userdel leaver"
                  - "groupadd -g 1500 games"
                  - "groupadd -g 1001 bob"
                  - "usermod -s /usr/bin/nologin -p '$6$a$b' -a -G games arch"
                  - "gpasswd -d arch wheel"
                  - "useradd -m -u 1001 -g bob -G wheel,games -c 'Bob B' -d /home/bob -s /bin/sh -p '$6$x$y' bob"
                  - "gpasswd -M bob,arch games"
                # Not drafted:
                #   /home/bob/notes (in the home of bob, which useradd -m makes in run:, after files:)

                """), "\(draft.stdout)")
        try draft.stdout.write(toFile: folder + "/again.yaml", atomically: false, encoding: .utf8)
        let again = try Harness.run(["build", folder + "/again.yaml", "--store", store])
        #expect(again.status == 0, "\(again.stderr)")
        let rebuilt = try Harness.run(["shell", "again", "--store", store, "--", "sh", "-c", show])
        #expect(rebuilt.status == 0, "\(rebuilt.stderr)")
        #expect(rebuilt.stdout == running, "\(running)\n---\n\(rebuilt.stdout)")
        #expect(running.contains("bob:x:1001:1001:Bob B:/home/bob:/bin/sh") && running.contains("games:x:1500:bob,arch"), "\(running)")
    }
}
