import CLayerSupport
import Foundation
import Glibc
import LayerEntries
import LayerRecipe
import LayerSupport

/// Makes a freshly built upper directory reproducible and clean: install dates and mtimes set to
/// the layer epoch, overlayfs's bookkeeping xattrs dropped, and nothing left that belongs to the
/// package manager's working state (lock, log, package cache, sync databases).
struct Normaliser {
    let tree: String
    let epoch: Int64

    /// overlayfs's own bookkeeping (`origin`, `impure`, `nlink`, the upper root's `uuid`) names inode
    /// numbers and ids of the build host. Opaque markers are content and stay.
    static func isBookkeeping(_ attribute: [UInt8]) -> Bool {
        attribute.starts(with: ExtendedAttributes.overlayPrefix) && attribute != Array("trusted.overlay.opaque".utf8)
    }

    /// The trees below this one, bottom first: their packages may own files in /var/log.
    var lowerTrees: [String] = []

    /// Working state that must never be part of a layer.
    static let strayPaths = PackageManagerState.files.map { String($0.dropFirst()) }

    /// What Arch systems make anew on every build or first boot: a layer keeps none of it, so the
    /// same inputs give the same tree, and no machine that boots the image shares another's
    /// identity or secrets. The README lists each with what is done.
    static let perMachineState = [
        "var/lib/systemd/random-seed",  // systemd-random-seed's seed: a secret of one machine
        "var/cache/ldconfig/aux-cache",  // ldconfig's cache of inode numbers and times
    ]

    /// Makes the tree reproducible and clean, but for each entry's times and attributes, which
    /// `settle` does in the scan that follows; returns a line for each piece of per-machine state
    /// it found and dealt with.
    @discardableResult
    func run() throws -> [String] {
        for relative in Self.strayPaths { removeFile(relative) }
        try removeContents(of: String(PackageManagerState.packageCache.dropFirst()))
        try removeSyncDatabases()
        var notes: [String] = []
        // An id (systemd's scriptlet makes one) is emptied. Every boot of an image starts from the
        // image's /etc, so systemd would take each for the first one with `uninitialized` there
        // (machine-id(5)): it would preset every unit and run the first-boot units (the
        // systemd-firstboot prompts among them) again and again. With an empty file it makes the
        // boot's own id and takes the boot for none. An empty file, and an `uninitialized` a layer
        // wrote itself (its own choice), hold no id and stay; one larger than any id is read no further.
        var holdsID = false
        do {
            if let data = try regularFile("etc/machine-id", atMost: 4096) {
                holdsID = !data.isEmpty && data != Array(Self.uninitialized.utf8)
            }
        } catch is FileTooLarge {
            holdsID = true
        }
        if holdsID {
            // Root's and 0444 as systemd leaves it, whatever the umask of whoever runs layerctl.
            try FileSystem.writeAtomically([(Data(), tree + "/etc/machine-id")], mode: 0o444, owner: (0, 0))
            notes.append("/etc/machine-id left empty: each boot makes its own id, and none is taken for the image's first")
        }
        for relative in Self.perMachineState where removeFile(relative) {
            notes.append("/\(relative) removed: each machine makes its own")
        }
        let ssh = isRealDirectory("etc/ssh") ? (try? FileSystem.listDirectory(tree + "/etc/ssh")) ?? [] : []
        for name in ssh where name.hasPrefix("ssh_host_") && name.contains("_key") && removeFile("etc/ssh/" + name) {
            notes.append("/etc/ssh/\(name) removed: a host key belongs to one machine (sshd makes it when it starts without one)")
        }
        if isRealDirectory("etc/pacman.d/gnupg") && holdsSecretKey("etc/pacman.d/gnupg") {
            try FileSystem.removeTree(tree + "/etc/pacman.d/gnupg")
            notes.append("/etc/pacman.d/gnupg removed: it held a private key every machine would share; run `pacman-key --init` and `--populate` at boot")
        }
        if let accounts = try settleLockedAccountAges() { notes.append(accounts) }
        let logs = try removeUnownedLogs()
        if !logs.isEmpty { notes.append("removed from /var/log, which no package owns: " + logs.joined(separator: ", ")) }
        try fixInstallDates()
        try stampUpdates()
        return notes
    }

    /// What `stampUpdates` writes.
    static let updateStamp = "# Written by layerctl when it built the layer: the units with ConditionNeedsUpdate= need not run.\n"

    /// systemd runs the units with `ConditionNeedsUpdate=` (ldconfig, the hwdb's and the journal
    /// catalog's updates) at a boot that finds /usr newer than `/etc/.updated` or `/var/.updated`,
    /// and `systemd-update-done` then writes those stamps. A booted image forgets them with the
    /// rest of what a boot writes, so every boot would do that work again, though libalpm and the
    /// packages' hooks did it when the layer was built. So a layer that changed /usr, in a stack
    /// with systemd, holds both stamps, as new as its /usr once the scan settles their times (or
    /// newer, under an epoch to come). Written only in a folder the layer has: a layer that
    /// changed /usr but not /etc keeps the stamp of the layer below, of the same epoch.
    private func stampUpdates() throws {
        // A layer that left /usr alone (most above the first) looks for systemd in no tree.
        guard isRealDirectory("usr"),
            (lowerTrees + [tree]).contains(where: { Self.regularFileSize("usr/lib/systemd/systemd", in: $0) != nil })
        else { return }
        for folder in ["etc", "var"] where isRealDirectory(folder) {
            let relative = folder + "/.updated"
            var st = stat()
            if lstat(tree + "/" + relative, &st) == 0 && st.st_mode & S_IFMT == S_IFDIR { continue }
            // Never through what a step left there (a symlink to a host file): it goes first.
            removeFile(relative)
            try FileSystem.writeFile(Data(Self.updateStamp.utf8), to: tree + "/" + relative)
            try sys("set the mode of", tree + "/" + relative) { chmod(tree + "/" + relative, 0o644) }
        }
    }

    static let uninitialized = "uninitialized\n"

    /// systemd-sysusers writes each account it makes with the day of its last password change from
    /// `SOURCE_DATE_EPOCH`, and a build's is 0 unless the user gives one: day 0, which shadow(5)
    /// reads as "change the password at the next login". PAM then refuses every way into such an
    /// account (`su`, `sudo -u postgres`, cron's jobs for it) until a new password is set, which a
    /// booted image forgets. shadow's own `useradd` leaves the field empty instead, as no age
    /// ("better disable aging than requiring a password change"). An account with a locked
    /// password (`!…` or `*…`), as sysusers makes them, can never answer that demand, so its day 0
    /// is made empty as useradd would; an account with a password keeps a day 0 a step set on
    /// purpose (`chage -d 0`). Returns a note naming the accounts, nil when there were none.
    private func settleLockedAccountAges() throws -> String? {
        let relative = "etc/shadow"
        let text: [UInt8]
        do {
            guard let read = try regularFile(relative) else { return nil }
            text = read
        } catch is FileTooLarge {
            return nil  // no shadow file of any system; left as the layer made it
        }
        var lines = text.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)
        var settled: [String] = []
        for (index, line) in lines.enumerated() {
            var fields = line.split(separator: UInt8(ascii: ":"), omittingEmptySubsequences: false)
            guard fields.count >= 3, Array(fields[2]) == [UInt8(ascii: "0")],
                let lock = fields[1].first, lock == UInt8(ascii: "!") || lock == UInt8(ascii: "*")
            else { continue }
            fields[2] = []
            lines[index] = ArraySlice(Array(fields.joined(separator: [UInt8(ascii: ":")])))
            settled.append(String(decoding: fields[0], as: UTF8.self))
        }
        guard !settled.isEmpty else { return nil }
        // In place (its mode, owner and attributes stay), without fsync, as the install dates.
        try FileSystem.writeFile(Data(lines.joined(separator: [UInt8(ascii: "\n")])), to: tree + "/" + relative)
        // Account names come from the layer: only those made of what useradd allows are shown.
        let named = settled.filter { $0.utf8.allSatisfy { Self.accountNameByte($0) } && $0.count <= 32 }
        let shown = named.prefix(5)
        let rest = settled.count - shown.count
        let list = shown.isEmpty ? "" : " (" + shown.joined(separator: ", ") + (rest > 0 ? " and \(rest) more" : "") + ")"
        return "/etc/shadow: \(counted(settled.count, "locked account"))\(list) had a last password change on day 0 "
            + "(SOURCE_DATE_EPOCH), which PAM takes as \"change it now\" and so refuses su, sudo -u and cron as them; "
            + "left without a date, as useradd leaves its accounts"
    }

    /// The bytes of a user name as shadow's `useradd` takes it (`[a-z_][a-z0-9_-]*[$]`, and capitals).
    private static func accountNameByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            true
        case UInt8(ascii: "_"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "$"): true
        default: false
        }
    }

    /// Whether a GnuPG home holds a secret key (`pacman-key --init` makes one).
    private func holdsSecretKey(_ home: String) -> Bool {
        if isRealDirectory(home + "/private-keys-v1.d"), let keys = try? FileSystem.listDirectory(tree + "/" + home + "/private-keys-v1.d"),
            !keys.isEmpty
        {
            return true
        }
        return (regularFileSize(home + "/secring.gpg") ?? 0) > 0
    }

    // The tree is the layer's: a run: step may have made any of its folders a symlink to a host
    // path (`ln -s /home /var/cache`), or a file a FIFO. Nothing here follows a symlink of the
    // tree or opens anything but a regular file. Nothing of the build runs any more, so what is
    // checked stays so.

    /// Whether `relative` and each folder on the way to it is a real folder of `root`.
    static func isRealDirectory(_ relative: String, in root: String) -> Bool {
        var path = root
        for component in relative.split(separator: "/") {
            path += "/" + component
            guard FileSystem.isDirectory(path) else { return false }
        }
        return true
    }

    private func isRealDirectory(_ relative: String) -> Bool { Self.isRealDirectory(relative, in: tree) }

    /// The size of the regular file `relative` of `root`, reached through real folders only.
    static func regularFileSize(_ relative: String, in root: String) -> Int64? {
        let (folder, _) = FileSystem.split(relative)
        var st = stat()
        guard folder == "." || isRealDirectory(folder, in: root), lstat(root + "/" + relative, &st) == 0,
            st.st_mode & S_IFMT == S_IFREG
        else { return nil }
        return Int64(st.st_size)
    }

    /// The bytes of the regular file `relative` of `root`, reached through real folders only; a
    /// file of more than `limit` bytes is refused (`FileTooLarge`, named as in the tree) unread.
    static func regularFile(
        _ relative: String, in root: String, atMost limit: Int64 = ReadLimit.packageDatabaseFile
    ) throws -> [UInt8]? {
        guard regularFileSize(relative, in: root) != nil else { return nil }
        do {
            return Array(try FileSystem.readRegularFile(root + "/" + relative, atMost: limit))
        } catch let large as FileTooLarge {
            throw FileTooLarge(path: "/" + relative, size: large.size, limit: large.limit)
        } catch {
            return nil
        }
    }

    private func regularFileSize(_ relative: String) -> Int64? { Self.regularFileSize(relative, in: tree) }

    private func regularFile(_ relative: String, atMost limit: Int64 = ReadLimit.packageDatabaseFile) throws -> [UInt8]? {
        try Self.regularFile(relative, in: tree, atMost: limit)
    }

    /// Removes the entry `relative` (a symlink itself, never what it points to) when the folders on
    /// the way are real; true when there was one.
    @discardableResult
    private func removeFile(_ relative: String) -> Bool {
        let (folder, _) = FileSystem.split(relative)
        var st = stat()
        guard folder == "." || isRealDirectory(folder), lstat(tree + "/" + relative, &st) == 0, st.st_mode & S_IFMT != S_IFDIR
        else { return false }
        return unlink(tree + "/" + relative) == 0
    }

    /// Files under /var/log that no package of this tree or those below it lists: logs of the build.
    private func removeUnownedLogs() throws -> [String] {
        guard isRealDirectory("var/log") else { return [] }
        // The files this layer left there first: most layers leave none once pacman's log is
        // gone, and then no package's file list is read.
        var found: [String] = []
        // Depth first, in byte order; the folders still to read are a list, not calls, and
        // PathLimit ends the walk of a tree a step nested without end.
        var folders = ["var/log"]
        while let relative = folders.popLast() {
            var below: [String] = []
            for name in try FileSystem.listDirectory(tree + "/" + relative) {
                try PathLimit.check(relative.utf8.count + 1, adding: Array(name.utf8), to: Array(("/" + relative).utf8))
                let path = relative + "/" + name
                var st = stat()
                guard lstat(tree + "/" + path, &st) == 0 else { continue }
                if st.st_mode & S_IFMT == S_IFDIR {
                    below.append(path)
                } else if !(st.st_mode & S_IFMT == S_IFCHR && st.st_rdev == 0) {  // a whiteout is a removal
                    found.append(path)
                }
            }
            folders += below.reversed()
        }
        guard !found.isEmpty else { return [] }
        var owned = Set<String>()
        for root in lowerTrees + [tree] where Self.isRealDirectory("var/lib/pacman/local", in: root) {
            for entry in (try? FileSystem.listDirectory(root + "/var/lib/pacman/local")) ?? [] {
                guard let files = try Self.regularFile("var/lib/pacman/local/\(entry)/files", in: root) else { continue }
                for line in String(decoding: files, as: UTF8.self).split(separator: "\n") where line.hasPrefix("var/log/") {
                    owned.insert(String(line))
                }
            }
        }
        var removed: [String] = []
        for path in found where !owned.contains(path) {
            try sys("remove", "/" + path) { unlink(tree + "/" + path) }
            removed.append("/" + path)
        }
        return removed.sorted()
    }

    private func removeContents(of relative: String) throws {
        let path = tree + "/" + relative
        guard isRealDirectory(relative) else { return }
        for name in try FileSystem.listDirectory(path) { try FileSystem.removeTree(path + "/" + name) }
    }

    /// The sync databases a step left where the build's symlink to its own was (which the parent
    /// removed before this): `pacman -Sy` after `rm /var/lib/pacman/sync`, say. No layer keeps them.
    private func removeSyncDatabases() throws {
        let relative = String(PackageManagerState.syncDatabases.dropFirst())
        guard isRealDirectory(FileSystem.split(relative).directory) else { return }
        var st = stat()
        guard lstat(tree + "/" + relative, &st) == 0 else { return }
        if st.st_mode & S_IFMT == S_IFDIR {
            try FileSystem.removeTree(tree + "/" + relative)
        } else if unlink(tree + "/" + relative) != 0 {
            throw SystemError("remove", tree + "/" + relative)
        }
    }

    /// `%INSTALLDATE%` is the only varying field libalpm writes into the local database.
    private func fixInstallDates() throws {
        let local = tree + "/var/lib/pacman/local"
        guard isRealDirectory("var/lib/pacman/local") else { return }
        for entry in try FileSystem.listDirectory(local) {
            let desc = local + "/" + entry + "/desc"
            guard let data = try regularFile("var/lib/pacman/local/\(entry)/desc") else { continue }
            var lines = String(decoding: data, as: UTF8.self).components(separatedBy: "\n")
            guard let index = lines.firstIndex(of: "%INSTALLDATE%"), index + 1 < lines.count else { continue }
            lines[index + 1] = String(epoch)
            // In place and without fsync: the tree is not a layer until its commit, and a crash
            // before that discards it whole.
            try FileSystem.writeFile(Data(lines.joined(separator: "\n").utf8), to: desc)
        }
    }

    /// Settles one entry as the tree's scan meets it (`TreeScan.Settle`): overlayfs's bookkeeping
    /// attributes removed, the mtime clamped to the epoch, whole seconds. Nothing changes a
    /// folder's mtime any more (entries are only removed before the scan), so a folder may be
    /// settled before its entries. The access time is left as it is: no image, manifest or
    /// digest holds it, and every read changes it.
    func settle(_ place: TreeScan.Place, _ st: inout stat, _ attributes: inout [ExtendedAttribute]) throws {
        // Most entries need nothing: package files keep their (older) times, and only entries
        // overlayfs copied up carry its bookkeeping.
        let clamped = Int64(st.st_mtim.tv_sec) <= epoch && st.st_mtim.tv_nsec == 0
        guard !clamped || attributes.contains(where: { Self.isBookkeeping($0.name) }) else { return }
        if attributes.contains(where: { Self.isBookkeeping($0.name) }) {
            try RawPath.with(place.path) { p in
                for attribute in attributes where Self.isBookkeeping(attribute.name) {
                    if RawPath.with(attribute.name, { lremovexattr(p, $0) }) != 0 && errno != ENODATA {
                        throw SystemError("remove attribute \(attribute.displayName) from", RawPath.string(place.path))
                    }
                }
            }
            attributes.removeAll { Self.isBookkeeping($0.name) }
        }
        if var times = Self.settledTimes(st, epoch: epoch) {
            try sys("set time of", RawPath.string(place.path)) {
                RawPath.with(place.name) { utimensat(place.folder, $0, &times, AT_SYMLINK_NOFOLLOW) }
            }
            st.st_mtim = times[1]
        }
    }

    /// The times `utimensat` sets an entry of `st` to in a layer of `epoch` (the access time left
    /// as it is, the mtime clamped to the epoch, whole seconds), or nil when it has them already.
    static func settledTimes(_ st: stat, epoch: Int64) -> [timespec]? {
        let mtime = min(Int64(st.st_mtim.tv_sec), epoch)
        guard Int64(st.st_mtim.tv_sec) != mtime || st.st_mtim.tv_nsec != 0 else { return nil }
        return [timespec(tv_sec: 0, tv_nsec: lc_utime_omit), timespec(tv_sec: Int(mtime), tv_nsec: 0)]
    }
}
