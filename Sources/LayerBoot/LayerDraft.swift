import Foundation
import Glibc
import LayerSupport

/// A first draft of a layer file from what changed since boot: the packages installed and removed,
/// and the small text files nobody's package owns as `files:` entries. Everything it cannot write
/// down is listed in a comment, so nothing is dropped in silence. It is a draft to read and edit,
/// not a replay.
public enum LayerDraft {
    /// Paths that change on any running system and describe no intent: logs, caches, pacman's and
    /// systemd's bookkeeping (the machine id each boot of an image makes, the stamps of
    /// `ConditionNeedsUpdate`), shell history.
    static let noise = [
        "/var/lib/pacman/", "/var/log/", "/var/cache/", "/var/tmp/", "/tmp/", "/var/lib/systemd/",
        "/etc/pacman.d/gnupg/", "/root/.bash_history", "/etc/ld.so.cache", "/etc/machine-id", "/etc/.updated",
        "/var/.updated",
    ]

    /// Why the regular file `file` (its bytes in `upper`) is no `files:` entry though it is small
    /// text, or nil: a secret of this machine or of a user, which a layer file would give to
    /// whoever reads it and an image to whoever boots it, or pacman's other version of a file.
    static func withheld(_ file: BootChanges.File, upper: String) -> String? {
        let name = file.path.split(separator: "/").last.map(String.init) ?? ""
        if file.path.hasPrefix("/etc/ssh/ssh_host_") {
            return "this machine's SSH host key, which each machine makes at its first boot, and a build removes"
        }
        for suffix in [".pacnew", ".pacsave"] where name.hasSuffix(suffix) && name.count > suffix.count {
            let original = String(file.path.dropLast(suffix.count))
            return suffix == ".pacnew"
                ? "pacman's new version of \(original), which it kept as it was: merge what changed into \(original)"
                : "pacman kept \(original) of a package removed since boot"
        }
        if file.size <= largestInline, let bytes = FileSystem.contents(upper + file.path),
            String(decoding: bytes, as: UTF8.self).contains("PRIVATE KEY-----")
        {
            return "a private key: a layer file is read by whoever builds it, and its image by whoever boots it; "
                + "copy it to the machines that need it instead"
        }
        return nil
    }

    /// The largest file drafted as inline content.
    static let largestInline = 64 << 10

    /// The draft for `changes`, as a child of layer `parent`; file contents come from `upper`, and
    /// what `upper` lacks from `lower`.
    public static func draft(_ changes: BootChanges, parent: String, upper: String, lower: String) -> String {
        var lines = [
            "# Drafted by `layerctl changes --layer-file` from what changed since boot. Read it before",
            "# building: it records what was done, not why.",
            "from: \(parent)",
        ]
        let added = changes.packages.filter { $0.change == .added }.map(\.name)
        let removed = changes.packages.filter { $0.change == .removed }.map(\.name)
        if !added.isEmpty { lines.append("packages: [\(added.joined(separator: ", "))]") }
        if !removed.isEmpty { lines.append("remove: [\(removed.joined(separator: ", "))]") }
        // pacman -Syu on the running system: the layer does it when it builds, to what the
        // repositories hold then (over an image built before, nothing else would).
        let upgraded = changes.packages.filter { $0.change == .upgraded }
        if !upgraded.isEmpty {
            lines.append("# \(counted(upgraded.count, "package")) upgraded since boot (\(upgraded.prefix(3).map(\.name).joined(separator: ", "))\(upgraded.count > 3 ? ", …" : "")): as pacman -Syu, when this builds")
            lines.append("upgrade: true")
        }

        // Users, groups and passwords as the commands that made them: the account files are each
        // every account's, and a build's useradd writes them (and their backups) again. Those a
        // package's sysusers.d declares (docker's group) its install makes in the build.
        let madeFolders = Set(changes.files.filter { $0.change == .added && $0.kind == "directory" }.map(\.path))
        let sysusers = [upper, lower].flatMap { [$0 + "/usr/lib/sysusers.d", $0 + "/etc/sysusers.d"] }
        let accounts = AccountDraft.commands(
            before: changes.accountsBefore, now: changes.accountsNow, madeFolders: madeFolders,
            packaged: AccountDraft.declared(in: sysusers))
        var entries: [String] = []
        var skipped: [String] = []
        var removals: [String] = []
        for package in changes.packages where package.change == .downgraded {
            skipped.append(
                "package \(package.name) \(package.change.rawValue) to \(package.after ?? ""): a build takes the repository's version"
            )
        }
        for file in changes.files {
            if noise.contains(where: { file.path.hasPrefix($0) || file.path + "/" == $0 }) { continue }
            if AccountFiles.written.contains(file.path) {
                if accounts.commands.isEmpty && AccountFiles.paths.contains(file.path) {
                    skipped.append("\(file.path) (\(file.change.rawValue); no change of an account that a command makes)")
                }
                continue
            }
            if let (home, user) = accounts.newHomes.first(where: { file.path.hasPrefix($0.key + "/") }) {
                // useradd -m makes the home, from /etc/skel, in run:, which comes after files:.
                let skel = "/etc/skel" + file.path.dropFirst(home.count)
                let fromSkel = file.kind != "directory" && FileSystem.contents(upper + file.path).map { made in
                    (FileSystem.contents(upper + skel) ?? FileSystem.contents(lower + skel)) == made
                } == true
                if file.kind != "directory" && !fromSkel {
                    skipped.append("\(file.path) (in the home of \(user), which useradd -m makes in run:, after files:)")
                }
                continue
            }
            if let owner = file.owner, file.change != .added || file.kind != "directory" {
                if file.kind != "directory" {
                    skipped.append("\(file.path) (\(file.change.rawValue), of package \(owner))")
                }
                continue
            }
            switch (file.change, file.kind) {
            case (.deleted, _) where file.path.contains("\u{FFFD}"):
                skipped.append("\(file.path) (deleted; its name is not UTF-8, which a layer file cannot write)")
            case (.deleted, let kind):
                // What a layer below left and this boot removed (`systemctl disable`'s links): a
                // folder goes with what was in it.
                removals.append("rm \(kind == "directory" ? "-rf" : "-f") -- \(shellWord(file.path))")
            case (_, "directory"):
                // A folder is made by the files in it; one that replaced a file is worth a word.
                if file.differences.contains("type") { skipped.append("\(file.path) (a file that became a folder)") }
            case (_, "regular"):
                if let reason = withheld(file, upper: upper) {
                    skipped.append("\(file.path) (\(file.change.rawValue); \(reason))")
                } else if let entry = fileEntry(file, upper: upper) {
                    entries += entry
                } else {
                    skipped.append(
                        "\(file.path) (\(file.change.rawValue); not text, or over \(largestInline >> 10) KiB: "
                            + "copy it beside the layer file and name it with `source:`)")
                }
            case (_, "symlink"):
                // `timedatectl set-timezone`'s /etc/localtime, `systemctl enable`'s wants.
                if let entry = linkEntry(file, upper: upper) {
                    entries += entry
                } else {
                    skipped.append("\(file.path) (\(file.change.rawValue) symlink whose target is not text)")
                }
            default:
                skipped.append("\(file.path) (\(file.change.rawValue) \(file.kind))")
            }
        }
        if !entries.isEmpty { lines += ["files:"] + entries }
        if !removals.isEmpty || !accounts.commands.isEmpty {
            lines += ["run:"]
            if !removals.isEmpty { lines += ["  # Removed since boot, and no package's."] + removals.map { "  - \(quoted($0))" } }
            if !accounts.commands.isEmpty {
                lines += ["  # Users and groups made or changed since boot, with their password hashes, as /etc/shadow has them."]
                lines += accounts.commands.map { "  - \(quoted($0))" }
            }
        }
        if !skipped.isEmpty { lines += ["# Not drafted:"] + skipped.map { "#   \($0)" } }
        return lines.joined(separator: "\n") + "\n"
    }

    /// A `files:` entry for a small UTF-8 file, or nil.
    static func fileEntry(_ file: BootChanges.File, upper: String) -> [String]? {
        let path = upper + file.path
        guard file.size <= largestInline, let bytes = FileSystem.contents(path),
            let text = String(validating: bytes, as: UTF8.self), !text.contains("\0")
        else { return nil }
        var st = stat()
        guard lstat(path, &st) == 0 else { return nil }
        var entry = ["  - path: \(file.path)", "    content: \(quoted(text))"]
        let mode = st.st_mode & 0o7777
        if mode != 0o644 { entry.append("    mode: \"\(String(mode, radix: 8).leftPadded(to: 4))\"") }
        if st.st_uid != 0 || st.st_gid != 0 { entry.append("    owner: \"\(st.st_uid):\(st.st_gid)\"") }
        return entry
    }

    /// A `files:` entry with `link:` for a symlink whose target is UTF-8 without control
    /// characters, or nil.
    static func linkEntry(_ file: BootChanges.File, upper: String) -> [String]? {
        let path = upper + file.path
        guard let bytes = try? FileSystem.readLink(Array(path.utf8)), let target = String(validating: bytes, as: UTF8.self),
            !target.isEmpty, !target.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F })
        else { return nil }
        var st = stat()
        guard lstat(path, &st) == 0 else { return nil }
        var entry = ["  - path: \(file.path)", "    link: \(quoted(target))"]
        if st.st_uid != 0 || st.st_gid != 0 { entry.append("    owner: \"\(st.st_uid):\(st.st_gid)\"") }
        return entry
    }

    /// A YAML double-quoted scalar.
    static func quoted(_ text: String) -> String {
        var result = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\\": result += "\\\\"
            case "\"": result += "\\\""
            case "\n": result += "\\n"
            case "\t": result += "\\t"
            case "\r": result += "\\r"
            default:
                if scalar.value < 0x20 || scalar.value == 0x7F {
                    result += String(format: "\\x%02X", scalar.value)
                } else {
                    result.unicodeScalars.append(scalar)
                }
            }
        }
        return result + "\""
    }
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}
