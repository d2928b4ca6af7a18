import Foundation
import Glibc
import LayerSupport
import Yams

/// A key and its certificate that sign a staged kernel for UEFI Secure Boot, as sbctl signs the
/// kernels pacman installs: firmware whose signature database (db) trusts the certificate starts
/// the kernel, and refuses one signed by no key it trusts ("Access Denied"). The kernel comes out
/// of the image, so signing it says that this machine's owner chose to boot that image; the
/// initramfs is not checked by the firmware, and is copied as it is.
public struct KernelSigning: Sendable, Equatable {
    public var key: String
    public var certificate: String

    public init(key: String, certificate: String) {
        self.key = key
        self.certificate = certificate
    }

    /// Where sbctl keeps its keys by default: its `keydir` (sbctl.conf(5)), and the folder sbctl
    /// used before.
    static let sbctlFolders = ["/var/lib/sbctl/keys", "/usr/share/secureboot/keys"]
    /// sbctl's configuration, which may name another `keydir`, or the db key's own files.
    static let sbctlConfiguration = "/etc/sbctl/sbctl.conf"

    /// sbctl's signature database key, the key sbctl signs boot files with: the files
    /// `keys.db.privkey` and `keys.db.pubkey` of its configuration name, else `db/db.key` with
    /// `db/db.pem` in its configuration's `keydir`, else in the first of its default folders that
    /// holds both. nil when sbctl made none. A db key sbsign cannot read (`type` other than `file`,
    /// such as one in a TPM) is an error that says what to give instead. Every path is looked up
    /// under `root` (a test's folder; `/` is the machine's).
    public static func sbctlKeys(root: String = "") throws -> KernelSigning? {
        var folders = sbctlFolders
        let configuration = root + sbctlConfiguration
        if FileSystem.exists(configuration) {
            let said = try SbctlConfiguration(configuration)
            if let type = said.dbKeyType, type != "file" {
                throw BootError(
                    "sbctl keeps its db key as \(quote(clip(type, to: 40))) (keys.db.type in \(configuration)), which sbsign cannot "
                        + "sign with: give --secure-boot-key and --secure-boot-cert, or stage with --no-secure-boot-signing")
            }
            if let key = said.dbPrivateKey, let certificate = said.dbCertificate {
                let signing = KernelSigning(key: root + key, certificate: root + certificate)
                return FileSystem.exists(signing.key) && FileSystem.exists(signing.certificate) ? signing : nil
            }
            if let keydir = said.keydir { folders = [keydir] }
        }
        return folders.lazy.map { KernelSigning(key: root + $0 + "/db/db.key", certificate: root + $0 + "/db/db.pem") }
            .first { FileSystem.exists($0.key) && FileSystem.exists($0.certificate) }
    }

    /// The program that signs: sbsign, of sbsigntools.
    static let tool = "sbsign"

    static let noTool = BootError(
        "signing the kernel for Secure Boot needs sbsign, which is not installed: install sbsigntools "
            + "(Debian: sbsigntool), or stage with --no-secure-boot-signing",
        code: .system)

    /// Fails, before anything is staged, when the kernel could not be signed: no sbsign, or a key
    /// or certificate that is not a readable file.
    func check() throws {
        guard FileSystem.executable(Self.tool) != nil else { throw Self.noTool }
        for (what, path) in [("key", key), ("certificate", certificate)] {
            var st = stat()
            guard stat(path, &st) == 0, st.st_mode & S_IFMT == S_IFREG, access(path, R_OK) == 0 else {
                let why = FileSystem.exists(path) ? "is no file layerctl can read" : "does not exist"
                throw BootError("the Secure Boot \(what) \(path) \(why)")
            }
        }
    }

    /// Signs the kernel (or `what` else) `input` into `output`: sbsign's one line of error, if it fails.
    func sign(_ input: String, to output: String, shownAs: String, what: String = "kernel") throws {
        guard let sbsign = FileSystem.executable(Self.tool) else { throw Self.noTool }
        let (readEnd, writeEnd) = try makePipe(sbsign)
        let pid: pid_t
        do {
            pid = try spawn(
                sbsign, ["--key", key, "--cert", certificate, "--output", output, input],
                environment: ["PATH=/usr/bin:/bin:/usr/sbin:/sbin", "LC_ALL=C"], stdoutFD: writeEnd, stderrFD: writeEnd)
        } catch {
            close(readEnd)
            close(writeEnd)
            throw error
        }
        close(writeEnd)
        let said = String(decoding: FileHandle(fileDescriptor: readEnd, closeOnDealloc: true).readDataToEndOfFile(), as: UTF8.self)
        let status = waitForExit(pid)
        guard status != 0 else { return }
        unlink(output)
        // Its first line says why ("error in key/certificate chain", "Can't load key from file …");
        // OpenSSL's error queue follows it. Of a file with no signature yet (a unified kernel image)
        // it says so first, and a write that fails (a full boot partition) it does not explain.
        let lines = said.split(whereSeparator: \.isNewline).filter { !$0.hasPrefix("Signing Unsigned original image") }
        if lines.isEmpty, let room = Self.roomLacking(for: input, at: output) {
            throw BootError("signing the \(what) of \(shownAs) with \(key) failed: \(room)", code: .system)
        }
        let why = lines.first.map { clip(String($0), to: 200) } ?? exitWords(status)
        throw BootError("signing the \(what) of \(shownAs) with \(key) failed: \(why)")
    }

    /// Why a signed copy of `input` could not be written to `output`, when its filesystem has less
    /// room than the copy takes; nil when it has room.
    static func roomLacking(for input: String, at output: String) -> String? {
        var st = stat()
        var fs = statvfs()
        let folder = FileSystem.split(output).directory
        guard stat(input, &st) == 0, statvfs(folder, &fs) == 0 else { return nil }
        // Root writes into the blocks ext4 keeps for root.
        let free = UInt64(geteuid() == 0 ? fs.f_bfree : fs.f_bavail) * UInt64(fs.f_frsize)
        guard free < UInt64(st.st_size) else { return nil }
        return "the filesystem of \(folder) has \(formatBytes(Int64(free))) free, and the signed copy takes \(formatBytes(Int64(st.st_size)))"
    }

    /// Whether the firmware booted with Secure Boot on: its global variable SecureBoot, in
    /// `efiVariables` (efivarfs: four bytes of attributes, then the value, 1 when on).
    public static func secureBootEnabled(efiVariables: String) -> Bool {
        let path = efiVariables + "/SecureBoot-8be4dfc1-93ca-11d0-9a89-00a0c9245f6f"
        guard let data = try? FileSystem.readRegularFile(path, atMost: 64), data.count >= 5 else { return false }
        return data[data.startIndex + 4] == 1
    }

    /// What to say of `staged` on a machine that booted with Secure Boot on, when its kernel is the
    /// image's own: the firmware will start it only if a key it trusts signed it. nil otherwise.
    public static func unsignedWarning(_ staged: StagedImage, efiVariables: String) -> String? {
        guard staged.secureBootCertificate == nil, secureBootEnabled(efiVariables: efiVariables) else { return nil }
        let what =
            staged.unifiedKernel == true
            ? "unified kernel image of \(staged.name) is not signed" : "kernel of \(staged.name) is staged as its image holds it"
        return "Secure Boot is on, and the \(what): the firmware starts it "
            + "only if a key in its db signed it; stage it again with --secure-boot-key and --secure-boot-cert (sbctl's db "
            + "key is taken by itself when sbctl made one)"
    }
}

/// What layerctl reads of sbctl.conf(5), a YAML mapping: `keydir`, and `keys.db`'s `privkey`,
/// `pubkey` and `type`. Each path is absolute, as sbctl requires.
struct SbctlConfiguration {
    var keydir: String?
    var dbPrivateKey: String?
    var dbCertificate: String?
    var dbKeyType: String?

    init(_ path: String) throws {
        func refused(_ why: String) -> BootError {
            BootError(
                "sbctl's configuration \(path) \(why); mend it, or give --secure-boot-key and --secure-boot-cert "
                    + "(or --no-secure-boot-signing)")
        }
        let text = String(decoding: try FileSystem.readRegularFile(path, atMost: 1 << 20), as: UTF8.self)
        let node: Node?
        do { node = try Yams.compose(yaml: text) } catch { throw refused("does not read as YAML") }
        guard let node else { return }
        guard let top = node.mapping else { throw refused("is not a YAML mapping") }
        func absolutePath(_ node: Node?, _ name: String) throws -> String? {
            guard let node else { return nil }
            guard let value = node.scalar?.string, value.hasPrefix("/"), !value.contains("\0") else {
                throw refused("gives \(name) as no absolute path")
            }
            return value
        }
        keydir = try absolutePath(top["keydir"], "keydir")
        let db = top["keys"]?.mapping?["db"]?.mapping
        dbPrivateKey = try absolutePath(db?["privkey"], "keys.db.privkey")
        dbCertificate = try absolutePath(db?["pubkey"], "keys.db.pubkey")
        dbKeyType = db?["type"]?.scalar?.string
    }
}
