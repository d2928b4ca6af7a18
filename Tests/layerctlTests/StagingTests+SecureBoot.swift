import Foundation
import Glibc
import LayerSupport
import Testing

/// Secure Boot: firmware that starts only what a key in its db signed, as on a machine whose owner
/// enrolled keys of their own with sbctl. OVMF's "snakeoil" build is such firmware, with Debian's
/// test key in its db.
extension StagingTests {
    /// Why a Secure Boot firmware boot cannot run here, or nil when it can.
    static var missingSecureBoot: String? {
        if let missing = missingLoader(systemdBoot, package: "systemd-boot-efi") { return missing }
        for file in [BootMachine.secureFirmwareCode, BootMachine.snakeoilKey] where !FileManager.default.fileExists(atPath: file) {
            return "needs OVMF's \(file) (ovmf, scripts/install-deps.sh)"
        }
        return FileSystem.executable("sbsign") == nil ? "needs sbsign (sbsigntool, scripts/install-deps.sh)" : nil
    }

    /// The snakeoil key without its password ("snakeoil"), as sbctl keeps its keys, in `folder`.
    func snakeoilKey(in folder: String) throws -> (key: String, certificate: String) {
        let key = folder + "/snakeoil.key"
        try BootMachine.shell(
            "openssl rsa -in '\(BootMachine.snakeoilKey)' -passin pass:snakeoil -out '\(key)' 2>/dev/null && chmod 0600 '\(key)'")
        return (key, BootMachine.snakeoilCertificate)
    }

    /// What a Secure Boot test stages with, onto `disk` and its ESP `esp`: the snakeoil key, EFI
    /// variables that say the machine which stages booted with Secure Boot on (SecureBoot is 1), a
    /// loader.conf that boots at once, and the options that stage onto them, `--sbctl-root` last.
    func secureBootStaging(_ disk: Disk, esp: String) throws -> (signer: (key: String, certificate: String), options: [String]) {
        let folder = FileSystem.split(disk.file).directory
        let efivars = folder + "/efivars"
        try FileManager.default.createDirectory(atPath: efivars, withIntermediateDirectories: true)
        try Data([6, 0, 0, 0, 1]).write(to: URL(fileURLWithPath: efivars + "/SecureBoot-8be4dfc1-93ca-11d0-9a89-00a0c9245f6f"))
        try BootMachine.shell("mkdir -p '\(esp)/loader' && printf 'timeout 0\\nconsole-mode keep\\n' >'\(esp)/loader/loader.conf'")
        let options = [
            "--state-dir", disk.mount + "/state", "--boot-dir", esp, "--grub-dir", disk.grub, "--run-dir", disk.run,
            "--efivars-dir", efivars, "--sbctl-root", folder + "/no-sbctl",
        ]
        return (try snakeoilKey(in: folder), options)
    }

    @Test("with Secure Boot on, the firmware starts the staged kernel that --secure-boot-key signed, and refuses the image's own; stage says so")
    func secureBootSignedKernel() throws {
        if let missing = Self.missingSecureBoot {
            print("StagingTests.secureBootSignedKernel skipped: \(missing)")
            return
        }
        let disk = try makeDisk()
        defer { unmount(disk) }
        let esp = try makeSystemPartition(beside: disk)
        defer { _ = try? BootMachine.shell("umount '\(esp)'") }
        let folder = FileSystem.split(disk.file).directory
        let (signer, options) = try secureBootStaging(disk, esp: esp)
        let append = "console=ttyS0 panic=-1 rd.shell=0 init=/usr/bin/layerctl-probe"
        let signed = try layerctl(
            ["stage", machine.image, "--name", "signed", "--append", append, "--secure-boot-key", signer.key,
             "--secure-boot-cert", signer.certificate] + options)
        #expect(signed.stdout.contains("  kernel signed for Secure Boot: \(signer.certificate)\n"), "\(signed.stdout)")
        #expect(!signed.stderr.contains("Secure Boot"), "\(signed.stderr)")
        let plain = try layerctl(["stage", machine.image, "--name", "plain", "--append", append] + options)
        #expect(
            plain.stderr.contains("layerctl: Secure Boot is on, and the kernel of plain is staged as its image holds it"),
            "\(plain.stderr)")
        // The signature is the key's, on the kernel the image holds; the other kernel has none of it.
        let kernels = ["signed", "plain"].map { name in
            esp + Self.field("linux", of: text(esp + "/loader/entries/layerctl-\(name).conf"))
        }
        #expect(try BootMachine.shell("sbverify --cert '\(signer.certificate)' '\(kernels[0])' >/dev/null 2>&1 && echo ok") == "ok\n")
        #expect(try BootMachine.shell("sbverify --cert '\(signer.certificate)' '\(kernels[1])' >/dev/null 2>&1 || echo refused") == "refused\n")
        let state = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: disk.mount + "/state/signed/staged.json")))
        #expect(((state as? [String: Any])?["current"] as? [String: Any])?["secureBootCertificate"] as? String == signer.certificate)

        let listed = try layerctl(["staged"] + options.dropLast(2))
        #expect(listed.stdout.contains("(kernel signed for Secure Boot)"), "\(listed.stdout)")
        #expect(listed.stdout.contains("(kernel not signed, and Secure Boot is on)"), "\(listed.stdout)")

        // systemd-boot, signed as sbctl signs it, starts the default entry; the firmware checks its kernel.
        let booted = try frozenCopy(disk)
        defer { unlink(booted) }
        for (name, starts) in [("signed", true), ("plain", false)] {
            let made = try layerctl(["boot", name, "--loader", "systemd-boot"] + options)
            #expect(made.stderr.contains("Secure Boot is on, and the kernel of plain") != starts, "\(made.stderr)")
            let output = try machine.bootFirmware(
                esp: try systemdBootPartition(esp, in: folder, signedWith: signer), disks: [(booted, true)],
                variables: try firmwareVariables(in: folder, secureBoot: true), secureBoot: true,
                until: starts ? nil : "Access Denied")
            let probe = Self.probeLines(output)
            if starts {
                #expect(output.contains("Secure boot enabled"), "\(output.suffix(4000))")
                #expect(probe.last == "PROBE done", "\(output.suffix(4000))")
            } else {
                #expect(output.contains("Access Denied"), "\(output.suffix(4000))")
                #expect(probe.isEmpty, "\(probe)")
            }
        }
    }

    @Test("stage --uki: the firmware starts the signed unified kernel image with its own command line, which an edited entry does not change, and refuses it once a byte of it changed")
    func secureBootUnifiedKernel() throws {
        if let missing = Self.missingSecureBoot {
            print("StagingTests.secureBootUnifiedKernel skipped: \(missing)")
            return
        }
        let disk = try makeDisk()
        defer { unmount(disk) }
        let esp = try makeSystemPartition(beside: disk)
        defer { _ = try? BootMachine.shell("umount '\(esp)'") }
        let folder = FileSystem.split(disk.file).directory
        let (signer, options) = try secureBootStaging(disk, esp: esp)
        let signing = ["--secure-boot-key", signer.key, "--secure-boot-cert", signer.certificate]

        // The probe image holds no systemd stub: one line, nothing staged.
        let stubless = try Harness.run(["stage", machine.image, "--name", "stubless", "--uki"] + signing + options)
        #expect(stubless.status == 3, "\(stubless.stderr)")
        #expect(
            stubless.stderr == "layerctl: \(machine.image) holds no /usr/lib/systemd/boot/efi/linuxx64.efi.stub, systemd's EFI stub, "
                + "of which --uki makes a unified kernel image: add systemd to its packages (Debian's image: systemd-boot-efi), or "
                + "stage without --uki\n")
        #expect(!FileManager.default.fileExists(atPath: disk.mount + "/state/stubless"))
        #expect(!FileManager.default.fileExists(atPath: esp + "/layerctl/stubless"))

        let image = try BootMachine.stubProbe()

        // A key that does not match its certificate: one line, nothing of the name stays.
        try BootMachine.shell(
            "openssl req -new -x509 -newkey rsa:2048 -nodes -subj /CN=other -days 1 -keyout '\(folder)/other.key' "
                + "-out '\(folder)/other.pem' 2>/dev/null")
        let mismatched = try Harness.run(
            ["stage", image, "--name", "failed", "--uki", "--secure-boot-key", folder + "/other.key", "--secure-boot-cert",
             signer.certificate] + options)
        #expect(
            mismatched.status == 3
                && mismatched.stderr == "layerctl: signing the kernel of \(image) with \(folder)/other.key failed: error in key/certificate chain\n",
            "\(mismatched.stderr)")
        #expect(!FileManager.default.fileExists(atPath: disk.mount + "/state/failed"))
        #expect(!FileManager.default.fileExists(atPath: esp + "/layerctl/failed"))

        let append = "console=ttyS0 panic=-1 rd.shell=0 init=/usr/bin/layerctl-probe"
        let staged = try layerctl(["stage", image, "--name", "uki", "--uki", "--append", append] + signing + options)
        #expect(staged.stdout.contains("  unified kernel image signed for Secure Boot: \(signer.certificate)\n"), "\(staged.stdout)")
        let entry = text(esp + "/loader/entries/layerctl-uki.conf")
        let stagedProgram = Self.field("efi", of: entry)
        #expect(stagedProgram.hasPrefix("/layerctl/uki/") && stagedProgram.hasSuffix("/linux.efi"), "\(entry)")
        #expect(Self.field("linux", of: entry).isEmpty && Self.field("options", of: entry).isEmpty, "\(entry)")
        #expect(
            staged.stdout.contains("  unified kernel image (kernel, initramfs and command line): \(esp + stagedProgram)\n"),
            "\(staged.stdout)")
        #expect(try BootMachine.shell("sbverify --cert '\(signer.certificate)' '\(esp + stagedProgram)' >/dev/null 2>&1 && echo ok") == "ok\n")
        let commandLine = try #require(
            staged.stdout.split(separator: "\n").first { $0.hasPrefix("  command line: ") }?.dropFirst("  command line: ".count))

        // An ESP with room for the image unsigned, not for its signed copy too: sbsign says nothing of
        // why it failed; stage does, and nothing of the name stays.
        let size = try #require(try FileManager.default.attributesOfItem(atPath: esp + stagedProgram)[.size] as? Int)
        let filler = esp + "/filler"
        try BootMachine.shell(
            "fallocate -l $(( $(stat -f -c '%f * %S' '\(esp)') - \(size * 3 / 2) )) '\(filler)'")
        let full = try Harness.run(["stage", image, "--name", "full", "--uki"] + signing + options)
        try FileManager.default.removeItem(atPath: filler)
        #expect(full.status == 8, "\(full.stderr)")
        #expect(
            full.stderr.hasPrefix("layerctl: signing the unified kernel image of \(image) with \(signer.key) failed: the filesystem of ")
                && full.stderr.contains(" free, and the signed copy takes "), "\(full.stderr)")
        #expect(!FileManager.default.fileExists(atPath: disk.mount + "/state/full"))
        #expect(!FileManager.default.fileExists(atPath: esp + "/layerctl/full"))

        #expect(text(disk.grub + "/42_layerctl").contains("    chainloader \(stagedProgram)\n"), "\(text(disk.grub + "/42_layerctl"))")
        let listed = try layerctl(["staged"] + options.dropLast(2))
        #expect(listed.stdout.contains("(unified kernel image signed for Secure Boot)"), "\(listed.stdout)")
        let program = try expectUnifiedKernelHolds(
            "uki", commandLine: String(commandLine), disk: disk, esp: esp, signer: signer, options: options)

        // A newer systemd's stub (Debian 13's, as Arch's is) starts the kernel otherwise: the same holds.
        if FileManager.default.fileExists(atPath: BootMachine.newerStub) {
            let newer = try layerctl(
                ["stage", try BootMachine.stubProbe(newer: true), "--name", "newer", "--uki", "--append", append] + signing + options)
            let line = try #require(newer.stdout.split(separator: "\n").first { $0.hasPrefix("  command line: ") })
            _ = try expectUnifiedKernelHolds(
                "newer", commandLine: String(line.dropFirst("  command line: ".count)), disk: disk, esp: esp, signer: signer,
                options: options)
            _ = try layerctl(["unstage", "newer", "--all"] + options.dropLast(2))  // the ESP holds few of them
        } else {
            print("StagingTests.secureBootUnifiedKernel: a newer systemd's stub skipped: no \(BootMachine.newerStub) (scripts/fetch-stub.sh)")
        }

        // A staged name is staged already, in one form or the other.
        let again = try Harness.run(["boot", "uki", "--uki"] + options)
        #expect(again.status == 2 && again.stderr.contains("uki is staged already (stage it again with --uki)"), "\(again.stderr)")

        // Staged again without --uki, the same image's folder holds its kernel and initramfs alone,
        // and stage says what the signature leaves open, since the image holds systemd's stub.
        let plain = try layerctl(["stage", image, "--name", "uki", "--append", append] + signing + options)
        #expect(
            plain.stderr.contains(
                "layerctl: the kernel of \(image) is signed, and its initramfs and command line (which names the image's sha256) "
                    + "are not: stage with --uki to sign all three as one unified kernel image, made with the image's systemd stub\n"),
            "\(plain.stderr)")
        let folderOnBoot = esp + FileSystem.split(program).directory
        #expect(plain.stdout.contains("  kernel and initramfs: \(folderOnBoot)/vmlinuz, \(folderOnBoot)/initramfs.img\n"), "\(plain.stdout)")
        #expect(try FileSystem.listDirectory(folderOnBoot).sorted() == ["initramfs.img", "vmlinuz"])

        // unstage takes the unified kernel image and its folder.
        _ = try layerctl(["stage", image, "--name", "uki", "--uki", "--append", append] + signing + options)
        #expect(try FileSystem.listDirectory(folderOnBoot) == ["linux.efi"])
        _ = try layerctl(["unstage", "uki", "--all"] + options.dropLast(2))
        #expect(!FileManager.default.fileExists(atPath: esp + "/layerctl/uki"))
        #expect(!FileManager.default.fileExists(atPath: esp + "/loader/entries/layerctl-uki.conf"))
    }

    /// Makes `name`, staged as a signed unified kernel image whose command line is `commandLine`,
    /// the default, edits its entry to pass another command line, and boots under the Secure Boot
    /// firmware: the image boots with the command line inside. Then changes one byte of that command
    /// line in the file: the firmware refuses it. Returns the image's path on the ESP.
    func expectUnifiedKernelHolds(
        _ name: String, commandLine: String, disk: Disk, esp: String, signer: (key: String, certificate: String),
        options: [String], sourceLocation: SourceLocation = #_sourceLocation
    ) throws -> String {
        let folder = FileSystem.split(disk.file).directory
        _ = try layerctl(["boot", name, "--loader", "systemd-boot"] + options)
        let entryPath = esp + "/loader/entries/layerctl-\(name).conf"
        let entry = text(entryPath)
        let program = Self.field("efi", of: entry)
        let bytes = try Data(contentsOf: URL(fileURLWithPath: esp + program))
        let at = try #require(bytes.range(of: Data(commandLine.utf8)), "the image's command line is in it", sourceLocation: sourceLocation)
        let verify = try #require(commandLine.split(separator: " ").first { $0.hasPrefix("layerctl.verify=") }, sourceLocation: sourceLocation)
        let others = commandLine.split(separator: " ").filter { !$0.hasPrefix("layerctl.") }.joined(separator: " ")
        try (entry + "options    layerctl.verify=sha256:\(String(repeating: "0", count: 64)) \(others)\n").write(
            toFile: entryPath, atomically: false, encoding: .utf8)
        let booted = try frozenCopy(disk)
        defer { unlink(booted) }
        let output = try machine.bootFirmware(
            esp: try systemdBootPartition(esp, in: folder, signedWith: signer), disks: [(booted, true)],
            variables: try firmwareVariables(in: folder, secureBoot: true), secureBoot: true)
        let probe = Self.probeLines(output)
        #expect(output.contains("Secure boot enabled"), "\(output.suffix(4000))", sourceLocation: sourceLocation)
        #expect(probe.last == "PROBE done", "\(output.suffix(4000))", sourceLocation: sourceLocation)
        #expect(probe.contains("PROBE env LAYERCTL_VERIFY=\(verify.dropFirst("layerctl.verify=".count))"), "\(probe)", sourceLocation: sourceLocation)

        var changed = bytes
        let digit = at.upperBound - 1
        changed[digit] = changed[digit] == UInt8(ascii: "0") ? UInt8(ascii: "1") : UInt8(ascii: "0")
        try changed.write(to: URL(fileURLWithPath: esp + program))
        let refused = try machine.bootFirmware(
            esp: try systemdBootPartition(esp, in: folder, signedWith: signer), disks: [(booted, true)],
            variables: try firmwareVariables(in: folder, secureBoot: true), secureBoot: true, until: "Access Denied")
        #expect(Self.probeLines(refused).isEmpty, "\(refused.suffix(4000))", sourceLocation: sourceLocation)
        return program
    }

    @Test("sbctl's db key signs the staged kernel by itself, boot REF signs what it stages; a key that is missing or does not match, or no sbsign, fails before anything is staged")
    func secureBootKeys() throws {
        if let missing = Self.missingSecureBoot {
            print("StagingTests.secureBootKeys skipped: \(missing)")
            return
        }
        let disk = try makeDisk()
        defer { unmount(disk) }
        let folder = FileSystem.split(disk.file).directory
        let signer = try snakeoilKey(in: folder)
        // sbctl's files, under a folder that stands for the machine's root.
        let sbctl = folder + "/sbctl"
        let options = disk.options + ["--sbctl-root", sbctl]
        func place(_ key: String, _ certificate: String) throws {
            try BootMachine.shell(
                "mkdir -p \"$(dirname '\(sbctl + key)')\" \"$(dirname '\(sbctl + certificate)')\" && cp '\(signer.key)' '\(sbctl + key)' "
                    + "&& cp '\(signer.certificate)' '\(sbctl + certificate)'")
        }

        // Keys where sbctl keeps them: db/db.key and db/db.pem in /var/lib/sbctl/keys.
        try place("/var/lib/sbctl/keys/db/db.key", "/var/lib/sbctl/keys/db/db.pem")
        let found = try layerctl(["stage", machine.image, "--name", "found"] + options)
        #expect(found.stdout.contains("  kernel signed for Secure Boot: \(sbctl)/var/lib/sbctl/keys/db/db.pem\n"), "\(found.stdout)")
        let kernel = disk.mount + Self.field("linux", of: text(disk.mount + "/boot/loader/entries/layerctl-found.conf"))
        #expect(try BootMachine.shell("sbverify --cert '\(signer.certificate)' '\(kernel)' >/dev/null 2>&1 && echo ok") == "ok\n")
        let unsigned = try layerctl(["stage", machine.image, "--name", "unsigned", "--no-secure-boot-signing"] + options)
        #expect(!unsigned.stdout.contains("signed for Secure Boot"), "\(unsigned.stdout)")
        _ = try layerctl(["unstage", "unsigned", "--all"] + disk.options)  // the disk holds few kernels

        // sbctl.conf(5) moves them: its keydir, or keys.db's own files, which come first.
        let configuration = sbctl + "/etc/sbctl/sbctl.conf"
        try FileManager.default.createDirectory(atPath: sbctl + "/etc/sbctl", withIntermediateDirectories: true)
        try place("/srv/keys/db/db.key", "/srv/keys/db/db.pem")
        try place("/secret/db-signing.key", "/secret/db-signing.crt")
        let db = "keys:\n  pk:\n    privkey: /srv/keys/PK/PK.key\n    type: file\n  db:\n    privkey: /secret/db-signing.key\n"
            + "    pubkey: /secret/db-signing.crt\n    type: file\n"
        for (text, certificate) in [
            ("---\nkeydir: /srv/keys\nlandlock: true\n", "/srv/keys/db/db.pem"), ("keydir: /srv/keys\n" + db, "/secret/db-signing.crt"),
        ] {
            try text.write(toFile: configuration, atomically: false, encoding: .utf8)
            let configured = try layerctl(["stage", machine.image, "--name", "configured"] + options)
            #expect(configured.stdout.contains("  kernel signed for Secure Boot: \(sbctl + certificate)\n"), "\(configured.stdout)")
            _ = try layerctl(["unstage", "configured", "--all"] + disk.options)  // the disk holds few kernels
        }
        // A db key in a TPM, which sbsign cannot use, and a configuration that does not read: one
        // line each, before anything is staged.
        for (text, says) in [
            ("keys:\n  db:\n    privkey: /var/lib/sbctl/keys/db/db.key\n    pubkey: /var/lib/sbctl/keys/db/db.pem\n    type: tpm\n",
             "sbctl keeps its db key as `tpm` (keys.db.type in \(configuration)), which sbsign cannot sign with: give "
                + "--secure-boot-key and --secure-boot-cert, or stage with --no-secure-boot-signing"),
            ("keydir: [a\n", "sbctl's configuration \(configuration) does not read as YAML; mend it, or give --secure-boot-key and "
                + "--secure-boot-cert (or --no-secure-boot-signing)"),
            ("keydir: srv/keys\n", "sbctl's configuration \(configuration) gives keydir as no absolute path; mend it"),
        ] {
            try text.write(toFile: configuration, atomically: false, encoding: .utf8)
            let refused = try Harness.run(["stage", machine.image, "--name", "failed"] + options)
            #expect(refused.status == 3 && refused.stderr.hasPrefix("layerctl: " + says), "\(refused.stderr)")
            #expect(!FileManager.default.fileExists(atPath: disk.mount + "/state/failed"))
            // A staged name is made the default without signing anything: sbctl is not asked.
            let boot = try Harness.run(["boot", "found"] + disk.options + ["--sbctl-root", sbctl])
            #expect(!boot.stderr.contains("sbctl"), "\(boot.stderr)")
        }
        try FileManager.default.removeItem(atPath: configuration)

        // Each failure is one line, and leaves nothing of the name.
        try BootMachine.shell(
            "openssl req -new -x509 -newkey rsa:2048 -nodes -subj /CN=other -days 1 -keyout '\(folder)/other.key' "
                + "-out '\(folder)/other.pem' 2>/dev/null")
        let failures: [(arguments: [String], status: Int32, says: String)] = [
            (["--secure-boot-key", folder + "/none.key", "--secure-boot-cert", signer.certificate], 3,
             "layerctl: the Secure Boot key \(folder)/none.key does not exist\n"),
            (["--secure-boot-key", folder, "--secure-boot-cert", signer.certificate], 3,
             "layerctl: the Secure Boot key \(folder) is no file layerctl can read\n"),
            (["--secure-boot-key", folder + "/other.key", "--secure-boot-cert", signer.certificate], 3,
             "layerctl: signing the kernel of \(machine.image) with \(folder)/other.key failed: error in key/certificate chain\n"),
            (["--secure-boot-key", signer.key], 2, "--secure-boot-key and --secure-boot-cert go together"),
            (["--secure-boot-key", signer.key, "--secure-boot-cert", signer.certificate, "--no-secure-boot-signing"], 2,
             "--no-secure-boot-signing and --secure-boot-key exclude each other"),
        ]
        for failure in failures {
            let result = try Harness.run(["stage", machine.image, "--name", "failed"] + failure.arguments + options)
            #expect(result.status == failure.status, "\(failure.arguments): \(result.stderr)")
            #expect(failure.status == 2 ? result.stderr.contains(failure.says) : result.stderr == failure.says, "\(result.stderr)")
            #expect(!FileManager.default.fileExists(atPath: disk.mount + "/state/failed"), "\(failure.arguments)")
            #expect(!FileManager.default.fileExists(atPath: disk.mount + "/boot/layerctl/failed"), "\(failure.arguments)")
        }

        // `boot` signs the kernel of an image reference it pulls and stages.
        if RegistryServer.available {
            let registry = try RegistryServer()
            defer { registry.stop() }
            let reference = "\(registry.host)/fleet/signed:v1"
            _ = try layerctl(["push", "probe", reference, "--store", machine.store])
            let pulled = try layerctl(
                ["boot", reference, "--name", "pulled", "--store", try Harness.temporaryDirectory("pulled-store"), "--loader",
                 "systemd-boot", "--secure-boot-key", signer.key, "--secure-boot-cert", signer.certificate] + disk.options)
            #expect(pulled.stdout.contains("  kernel signed for Secure Boot: \(signer.certificate)\n"), "\(pulled.stdout)")
            let kernel = disk.mount + Self.field("linux", of: text(disk.mount + "/boot/loader/entries/layerctl-pulled.conf"))
            #expect(try BootMachine.shell("sbverify --cert '\(signer.certificate)' '\(kernel)' >/dev/null 2>&1 && echo ok") == "ok\n")
        } else {
            print("StagingTests.secureBootKeys: boot REF skipped: docker-registry is not installed (scripts/install-deps.sh)")
        }

        // A staged name's kernel is staged already: `boot` has nothing to sign.
        let staged = try Harness.run(
            ["boot", "found", "--secure-boot-key", signer.key, "--secure-boot-cert", signer.certificate] + disk.options)
        #expect(staged.status == 2 && staged.stderr.contains("found is staged already"), "\(staged.stderr)")

        // Without sbsign (hidden in a mount namespace of its own): the package to install.
        let hidden = try Harness.runWithout("sbsign", ["stage", machine.image, "--name", "failed"] + options)
        #expect(hidden.status == 8, "\(hidden.stderr)")
        #expect(hidden.stderr.hasPrefix("layerctl: signing the kernel for Secure Boot needs sbsign, which is not installed"), "\(hidden.stderr)")
        #expect(!FileManager.default.fileExists(atPath: disk.mount + "/state/failed"))
    }
}
