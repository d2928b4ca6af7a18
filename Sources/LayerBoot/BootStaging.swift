import Foundation
import Glibc
import LayerSupport
import SquashfsImage

/// Puts images where the boot loader and the initramfs hook find them, and takes them away again.
///
/// `stage` keeps each image in `<store>/boot/<name>/<id>.squashfs`, extracts its kernel and
/// initramfs to `<boot>/layerctl/<name>/<id>/`, and writes a Boot Loader Specification entry and a
/// /etc/grub.d script, both with the command line that finds the image by its filesystem's UUID
/// and checks its sha256. The version staged before stays, as `layerctl-NAME-previous`, until the
/// new one is unstaged or a third is staged, so the boot menu always holds a way back.
public struct BootStaging: Sendable {
    public var stateDirectory: String
    public var bootDirectory: String
    /// The folder of GRUB's configuration scripts; nil leaves GRUB alone.
    public var grubDirectory: String?
    /// The ESP, where systemd-boot reads loader/loader.conf, when it is another partition than
    /// `bootDirectory` (an XBOOTLDR partition on /boot, the ESP on /efi): systemd-boot reads entries
    /// and kernels on both, its configuration only on the ESP. nil: `bootDirectory` holds it.
    public var espDirectory: String?
    /// Where the hook left /run/layerctl/boot.env on a running image.
    public var runDirectory: String = "/run/layerctl"
    /// The firmware's variables (efivarfs), where systemd-boot keeps a default that overrides loader.conf's.
    public var efiVariables: String = "/sys/firmware/efi/efivars"
    /// The key that signs each staged kernel for Secure Boot; nil copies the image's kernel as it is.
    public var signing: KernelSigning?
    /// Whether the kernel, initramfs and command line are staged as one unified kernel image, made
    /// with the image's systemd stub, which `signing` signs whole.
    public var unifiedKernel = false
    /// Told what the wait is for when another layerctl holds the staging lock.
    public var waiting: (@Sendable (String) -> Void)?
    /// Told what staging changed outside the name's own files (loader.conf's default, kept).
    public var told: (@Sendable (String) -> Void)?

    public init(stateDirectory: String, bootDirectory: String, grubDirectory: String?) {
        self.stateDirectory = stateDirectory
        self.bootDirectory = bootDirectory
        self.grubDirectory = grubDirectory
    }

    public static let grubScriptName = "42_layerctl"

    /// Where systemd-boot reads loader.conf: on the ESP.
    var loaderConfigurationPath: String { (espDirectory ?? bootDirectory) + "/loader/loader.conf" }

    /// The ESP, found as bootctl looks for it, when `bootDirectory` holds no loader.conf (an
    /// XBOOTLDR partition): the first of `candidates` that holds one; nil when there is none.
    public static func findSystemPartition(bootDirectory: String, candidates: [String] = ["/efi", "/boot/efi"]) -> String? {
        func holdsConfiguration(_ folder: String) -> Bool { FileSystem.exists(folder + "/loader/loader.conf") }
        if holdsConfiguration(bootDirectory) { return nil }
        let boot = URL(fileURLWithPath: bootDirectory).standardizedFileURL.path
        return candidates.first { URL(fileURLWithPath: $0).standardizedFileURL.path != boot && holdsConfiguration($0) }
    }

    /// Refuses, as for the boot folder, an ESP that is only this running image's overlay.
    private func checkSystemPartition() throws {
        if let espDirectory {
            try DeviceLocation.checkLasting(espDirectory, option: "--esp-dir", runDirectory: runDirectory)
        }
    }

    /// Names are file names, entry ids and GRUB titles at once, so they keep to a safe alphabet,
    /// and to a length that leaves room in a file name for `layerctl-NAME-previous.conf.tmp-…`.
    public static func validate(name: String) throws {
        let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
        guard !name.isEmpty, !name.hasPrefix("."), name.allSatisfy(allowed.contains), name.utf8.count <= 100 else {
            throw BootError(
                "\(quote(name)) cannot name a staged image: use at most 100 letters, digits, '.', '_' and '-' (give --name)")
        }
    }

    /// Fails, saying so, in a process that is not root, for a command that changes what the
    /// machine boots ("layerctl stage"): it would fail at the first folder or boot file it made,
    /// in words about that file.
    public static func requireRoot(_ command: String) throws {
        try NotRoot.require(command, because: "it writes the boot loader's kernels and entries")
    }

    /// What staging says of an image, or a stack, with nothing in /boot to start.
    public static func noBootFiles(_ shownAs: String) -> BootError {
        BootError("\(shownAs) has no kernel and initramfs in /boot (vmlinuz-NAME with initramfs-NAME.img), so no boot loader could start it")
    }

    func directory(_ name: String) -> String { stateDirectory + "/" + name }

    /// Held by stage, unstage and boot from their first read of what is staged to their last
    /// write: two at once would each keep a version the other dropped, or drop one the other kept,
    /// and leave images and kernels that no entry names, or entries whose kernel is gone. A stage
    /// holds it while its image is made, since two stages of one name make it at one path. Nil
    /// when nothing was ever staged and `creating` is false.
    private func lock(creating: Bool) throws -> FileLock? {
        if !creating && !FileSystem.isDirectory(stateDirectory) { return nil }
        try FileSystem.makeDirectories(stateDirectory)
        return try FileLock(folder: stateDirectory, mode: .exclusive) { [waiting, stateDirectory] in
            waiting?("another layerctl is staging, unstaging or changing the default boot; waiting for it (a lock on \(stateDirectory))")
        }
    }

    /// Fails before anything changes where staging would fail after: GRUB's script lists every
    /// staged name, so a damaged state of any name stops it (after this name's state and entries
    /// were written, its image would have gone), and its folder must be one. Every staged set.
    @discardableResult
    private func checkBeforeChanging() throws -> [StagedSet] {
        let sets = try staged()
        if let grubDirectory { try FileSystem.makeDirectories(grubDirectory) }
        return sets
    }

    /// Stages the image that `produce` writes to the path it is given, under `name`. `produce`
    /// returns the image's sha256 when it took it on the way. Staging the same image again changes
    /// nothing but the entries. `source` is what the record keeps (a layer's key, an image file);
    /// `shownAs`, what messages call it, when that is not `source` ("layer gaming (ab6a29b433dc)").
    /// Returns the name's versions as this staging saved them, under its lock: the image staged,
    /// and the way back.
    public func stage(
        name: String, source: String, shownAs: String? = nil, append: [String], produce: (String) throws -> String?
    ) throws -> StagedSet {
        try Self.validate(name: name)
        let lock = try lock(creating: true)
        defer { lock?.unlock() }
        let sets = try checkBeforeChanging()
        // A FAT boot partition (most ESPs) does not tell upper from lower case: the two names'
        // entries and kernel folders would be one.
        if let other = sets.map(\.current.name).first(where: { $0 != name && $0.lowercased() == name.lowercased() }) {
            throw BootError(
                "'\(name)' differs from the staged name '\(other)' only in case, and on a FAT boot partition their entries would be one file; give --name another name, or unstage \(other)")
        }
        let folder = directory(name)
        try FileSystem.makeDirectories(folder)
        do {
            try DeviceLocation.checkLasting(folder, option: "--state-dir", runDirectory: runDirectory)
            try DeviceLocation.checkLasting(bootDirectory, option: "--boot-dir", runDirectory: runDirectory)
            try checkSystemPartition()
            try DeviceLocation.checkCarried(folder, option: "--state-dir")
            try DeviceLocation.checkCarried(bootDirectory + "/layerctl/\(name)", option: "--boot-dir")
            try signing?.check()
        } catch {
            // A name never staged leaves no folder (rmdir removes none that holds anything).
            rmdir(folder)
            throw error
        }
        // Where the image lives is looked up while it is made: it can take a blkid.
        let device = Background { [folder] in try DeviceLocation(of: folder) }
        let incoming = folder + "/incoming.squashfs"
        unlink(incoming)
        let sha256: String
        do {
            sha256 = try produce(incoming) ?? Digest.sha256(file: incoming)
        } catch {
            // An image cut short, by a full disk most often: it would hold that disk's space. A
            // name never staged leaves no folder (rmdir removes none that holds anything).
            unlink(incoming)
            rmdir(folder)
            throw error
        }
        let id = String(sha256.prefix(12))
        let imageName = "\(id).squashfs"
        let imagePath = folder + "/" + imageName
        if rename(incoming, imagePath) != 0 {
            let error = SystemError("move the image to", imagePath)
            unlink(incoming)
            throw error
        }
        let before = try StagedSet.load(folder)
        do {
            let staged = try finishStaging(
                name: name, id: id, sha256: sha256, imagePath: imagePath, device: try device.value().inside(imageName),
                source: source, shownAs: shownAs ?? source, append: append, set: before)
            // Done means on disk also where there is no journal (a FAT boot partition, ext4 made
            // without one): there an fsync orders nothing else, and after a power cut a folder that
            // staging made, or the bitmap that marks its inode taken, could be lost while the files
            // in it were not, and the check at boot would clear the way to them. syncfs writes every
            // change of both filesystems, the folders staging made, and what the pull freed.
            try FileSystem.syncFileSystem(of: bootDirectory)
            if let espDirectory { try FileSystem.syncFileSystem(of: espDirectory) }
            try FileSystem.syncFileSystem(of: folder)
            return staged
        } catch {
            // What this attempt added goes; what was staged before stays as it was, and so does
            // what the state names once it was saved (GRUB's script, written after it, failed).
            let saved = (try? StagedSet.load(folder)) ?? nil
            if before?.versions.contains(where: { $0.id == id }) != true && saved?.versions.contains(where: { $0.id == id }) != true {
                unlink(imagePath)
                let bootFolder = bootDirectory + "/layerctl/\(name)/\(id)"
                for file in ["vmlinuz", "initramfs.img", "linux.efi"] + Self.workFiles { unlink(bootFolder + "/" + file) }
                rmdir(bootFolder)
            }
            // A name never staged before leaves no folders behind (rmdir removes none that holds anything).
            if before == nil {
                rmdir(bootDirectory + "/layerctl/\(name)")
                rmdir(bootDirectory + "/layerctl")
                rmdir(folder)
            }
            throw error
        }
    }

    private func finishStaging(
        name: String, id: String, sha256: String, imagePath: String, device: DeviceLocation, source: String, shownAs: String,
        append: [String], set before: StagedSet?
    ) throws -> StagedSet {
        let folder = directory(name)

        let reader = try SquashfsReader(image: imagePath)
        guard let files = try reader.bootFiles() else { throw Self.noBootFiles(shownAs) }
        if unifiedKernel { try Self.requireStub(reader, shownAs: shownAs) }
        let bootFolder = bootDirectory + "/layerctl/\(name)/\(id)"
        try FileSystem.makeDirectories(bootFolder)
        try checkRoom(reader, files, in: bootFolder, shownAs: shownAs)
        let words =
            [
                "layerctl.image=\(device.path)", "layerctl.device=UUID=\(device.uuid)",
                "layerctl.verify=sha256:\(sha256)",
            ] + append
        let commandLine = words.joined(separator: " ")
        let kernel = bootFolder + (unifiedKernel ? "/linux.efi" : "/vmlinuz")
        let initrd = unifiedKernel ? "" : bootFolder + "/initramfs.img"
        // The kernel, signed when staging signs, as vmlinuz.new: staged so, or put in the unified kernel image.
        let vmlinuz = bootFolder + "/vmlinuz"
        if let signing {
            try reader.copy(files.kernel, to: vmlinuz + ".unsigned")
            defer { unlink(vmlinuz + ".unsigned") }
            try signing.sign(vmlinuz + ".unsigned", to: vmlinuz + ".new", shownAs: shownAs)
            // What the signature leaves open, where the image holds what closes it.
            if !unifiedKernel, (try? reader.exists(UnifiedKernelImage.stubPath)) == true {
                told?(
                    "the kernel of \(shownAs) is signed, and its initramfs and command line (which names the image's sha256) "
                        + "are not: stage with --uki to sign all three as one unified kernel image, made with the image's systemd stub")
            }
        } else {
            try reader.copy(files.kernel, to: vmlinuz + ".new")
        }
        if unifiedKernel {
            defer { unlink(vmlinuz + ".new") }
            try writeUnifiedKernel(
                reader, kernel: vmlinuz + ".new", initrd: files.initrd, commandLine: commandLine, to: kernel + ".new",
                scratch: bootFolder, shownAs: shownAs)
        } else {
            try reader.copy(files.initrd, to: initrd + ".new")
        }
        // On disk before they are named, as the image is: after a power cut, an entry must not
        // lead the boot loader to an empty kernel. A restaged version's files take over the entries
        // of its files before, which on FAT needs the sync after the rename too.
        var copies: [(fd: Int32, from: String, to: String)] = []
        defer { for copy in copies { close(copy.fd) } }
        for path in [kernel, initrd] where !path.isEmpty {
            copies.append((try sys("open", path + ".new") { open(path + ".new", O_RDONLY | O_CLOEXEC) }, path + ".new", path))
        }
        try FileSystem.renameSynced(copies)

        let boot = try DeviceLocation(of: kernel, known: [device])
        let initrdOnBoot = unifiedKernel ? "" : try DeviceLocation(of: initrd, known: [boot]).path
        var st = stat()
        stat(imagePath, &st)
        let image = StagedImage(
            name: name, id: id, sha256: sha256, size: UInt64(st.st_size), image: imagePath,
            imageOnDevice: device.path, deviceUUID: device.uuid, kernel: kernel, initrd: initrd,
            kernelOnBoot: boot.path, initrdOnBoot: initrdOnBoot, bootUUID: boot.uuid,
            commandLine: commandLine, source: source,
            stagedAt: StagedImage.now(), secureBootCertificate: signing?.certificate, unifiedKernel: unifiedKernel ? true : nil)

        // The way back is the version running now if it is one of the two, else the one current so far.
        var set: StagedSet
        var dropped: StagedImage?
        if let before, before.current.id == id {
            set = StagedSet(current: image, previous: before.previous)
        } else if let before {
            let keepPrevious = before.previous.map(isRunning) == true && before.previous?.id != id
            set = StagedSet(current: image, previous: keepPrevious ? before.previous : before.current)
            dropped = keepPrevious ? before.current : before.previous
            if dropped?.id == id { dropped = nil }
        } else {
            set = StagedSet(current: image, previous: nil)
        }
        set.replacedDefault = before?.replacedDefault
        if let note = try keepSystemdBootDefault(name: name) { told?(note) }
        try save(set, in: folder)
        if let dropped { try remove(dropped) }
        // The same image staged before in the other form (a kernel and initramfs, or a unified
        // kernel image) left files in its folder that no entry names now.
        for version in before?.versions ?? [] where version.id == id {
            for path in version.bootFiles where !image.bootFiles.contains(path) { unlink(path) }
        }
        return set
    }

    /// Fails before a byte is copied when the boot partition has less room than the image's kernel
    /// and initramfs take (and the kernel's second copy, which signing and a unified kernel image
    /// keep beside it while they are made). A stranger's image may hold a kernel of any size:
    /// copied until the partition is full, it would leave no room meanwhile to whatever else writes
    /// there, a kernel update among them.
    private func checkRoom(_ reader: SquashfsReader, _ files: (kernel: String, initrd: String), in folder: String, shownAs: String) throws {
        let kernel = try reader.size(files.kernel)
        // An image's sizes are its own to state, up to 2^64 - 1: the sum stops there.
        let need = [kernel, try reader.size(files.initrd), signing != nil || unifiedKernel ? kernel : 0].reduce(UInt64(0)) {
            let (sum, overflow) = $0.addingReportingOverflow($1)
            return overflow ? .max : sum
        }
        var fs = statvfs()
        try sys("read the free space of the filesystem of", folder) { statvfs(folder, &fs) }
        // Root writes into the blocks ext4 keeps for root.
        let free = UInt64(geteuid() == 0 ? fs.f_bfree : fs.f_bavail) * UInt64(fs.f_frsize)
        guard need > free else { return }
        let held = RawPath.display(Array(files.kernel.utf8)) + " and " + RawPath.display(Array(files.initrd.utf8))
        throw BootError(
            "\(held) of \(shownAs) need \(formatBytes(Int64(min(need, UInt64(Int64.max))))) on the boot partition, "
                + "and the filesystem of \(bootDirectory) has \(formatBytes(Int64(free))) free", code: .system)
    }

    /// Removes the current version of `name` (the previous one becomes current), or all of them.
    /// The image running now is only removed with `force`.
    public func unstage(name: String, all: Bool, force: Bool) throws -> [StagedImage] {
        // With the boot partition not mounted on a running image, the entries it removed were
        // the overlay's, and the partition's kept naming the images it removed.
        try DeviceLocation.checkLasting(stateDirectory, option: "--state-dir", runDirectory: runDirectory)
        try DeviceLocation.checkLasting(bootDirectory, option: "--boot-dir", runDirectory: runDirectory)
        try checkSystemPartition()
        let lock = try lock(creating: false)
        defer { lock?.unlock() }
        let folder = directory(name)
        guard let set = try StagedSet.load(folder) else { throw BootError("nothing is staged as '\(name)'") }
        try checkBeforeChanging()
        let going = all ? set.versions : [set.current]
        if !force, let running = going.first(where: isRunning) {
            throw BootError(
                "\(name) \(running.id) is the image running now; unstage it with --force, or stage another first")
        }
        // The entries and the state first, the files they named after: stopped between the two
        // (a read-only boot folder, a power cut), no entry names a file that is gone.
        if all || set.previous == nil {
            // The default goes back to what it was before `boot` made it this name's entry, which
            // would otherwise name an entry that is gone: systemd-boot would boot its menu's first.
            if let note = try restoreSystemdBootDefault(set) { told?(note) }
            for path in [entryPath(name, previous: false), entryPath(name, previous: true), folder + "/" + StagedSet.fileName] {
                if unlink(path) != 0 && errno != ENOENT { throw SystemError("remove", path) }
            }
            for image in going { try remove(image) }
            rmdir(folder)
            rmdir(bootDirectory + "/layerctl/\(name)")
            try writeGrubScript()
        } else if let previous = set.previous {
            try save(StagedSet(current: previous, previous: nil, replacedDefault: set.replacedDefault), in: folder)
            for image in going { try remove(image) }
        }
        // The removals on disk before it returns, as stage's changes are: on FAT, which has no
        // journal, a power cut could keep an entry of a removed file whose clusters were freed.
        for directory in [bootDirectory, stateDirectory] where FileSystem.isDirectory(directory) {
            try FileSystem.syncFileSystem(of: directory)
        }
        return going
    }

    /// Every staged name, in byte order.
    public func staged() throws -> [StagedSet] {
        guard FileSystem.isDirectory(stateDirectory) else { return [] }
        return try FileSystem.listDirectory(stateDirectory).sorted().compactMap { try StagedSet.load(directory($0)) }
    }

    /// The files of `image` that are not as staging left them: its image file, kernel and
    /// initramfs, removed or emptied since (by hand, or by a tool that cleans the boot partition).
    public func missingFiles(_ image: StagedImage) -> [String] {
        func whole(_ path: String, size: UInt64?) -> Bool {
            var st = stat()
            guard stat(path, &st) == 0, st.st_mode & S_IFMT == S_IFREG, st.st_size > 0 else { return false }
            return size.map { UInt64(st.st_size) == $0 } ?? true
        }
        let files: [(String, UInt64?)] = [(image.image, image.size)] + image.bootFiles.map { ($0, nil) }
        return files.filter { !whole($0.0, size: $0.1) }.map(\.0)
    }

    /// Whether `image` is the one the machine runs now, by the sha256 the hook verified or the
    /// image path it mounted.
    public func isRunning(_ image: StagedImage) -> Bool {
        guard let booted = Self.booted(runDirectory: runDirectory) else { return false }
        return booted["LAYERCTL_VERIFY"] == "sha256:\(image.sha256)" || booted["LAYERCTL_IMAGE"] == image.imageOnDevice
    }

    /// What the hook booted, as its `boot.env` in `runDirectory` says (`LAYERCTL_IMAGE`,
    /// `LAYERCTL_DEVICE`, `LAYERCTL_VERIFY`, `LAYERCTL_TORAM`), or nil on a system that runs no
    /// layerctl image.
    static func booted(runDirectory: String) -> [String: String]? {
        guard let text = try? String(contentsOfFile: runDirectory + "/boot.env", encoding: .utf8) else { return nil }
        return Dictionary(
            text.split(separator: "\n").compactMap { line in
                line.firstIndex(of: "=").map { (String(line[..<$0]), String(line[line.index(after: $0)...])) }
            }, uniquingKeysWith: { first, _ in first })
    }

    public enum Loader: String, CaseIterable, Sendable {
        case systemdBoot = "systemd-boot"
        case grub
    }

    /// The boot loaders whose configuration the boot directory holds.
    public func detectedLoaders() -> [Loader] {
        var loaders: [Loader] = []
        if FileSystem.exists(loaderConfigurationPath) || FileSystem.isDirectory(bootDirectory + "/loader/entries") {
            loaders.append(.systemdBoot)
        }
        if FileSystem.exists(bootDirectory + "/grub/grub.cfg") || FileSystem.exists(bootDirectory + "/grub/grubenv") {
            loaders.append(.grub)
        }
        return loaders
    }

    /// Makes `name` the default boot (or, with `once`, the next boot only) of each loader, and says
    /// what it changed, one line each.
    public func makeDefault(name: String, once: Bool, loaders: [Loader]) throws -> [String] {
        try DeviceLocation.checkLasting(bootDirectory, option: "--boot-dir", runDirectory: runDirectory)
        try checkSystemPartition()
        let lock = try lock(creating: false)
        defer { lock?.unlock() }
        guard let set = try StagedSet.load(directory(name)) else { throw BootError("nothing is staged as '\(name)'") }
        // A default whose kernel is gone leaves the machine at the boot loader's error.
        if let missing = missingFiles(set.current).first {
            throw BootError(
                "\(name) \(set.current.id) cannot boot: \(missing) is gone or cut short since it was staged; stage it again, or unstage it",
                code: .damaged)
        }
        guard !loaders.isEmpty else {
            throw BootError(
                "found no boot loader configuration in \(bootDirectory) (loader/loader.conf or grub/grub.cfg); give --loader"
            )
        }
        let entry = "layerctl-\(name)"
        var done: [String] = []
        for loader in loaders {
            switch loader {
            case .systemdBoot where once:
                // The one-shot entry is an EFI variable, which only bootctl sets.
                let status = try runTool("bootctl", ["set-oneshot", entry + ".conf"])
                if status != 0 { throw BootError("bootctl set-oneshot \(entry).conf failed with status \(status)", code: .system) }
                done.append("systemd-boot boots \(entry).conf next time (bootctl set-oneshot)")
            case .systemdBoot:
                let path = loaderConfigurationPath
                let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
                // What it replaces is kept for unstage, first: a stop between the two keeps it.
                let replaced = BootEntries.loaderDefault(text) ?? ""
                if replaced.lowercased() != (entry + ".conf").lowercased() {
                    var remembered = set
                    remembered.replacedDefault = replaced
                    try FileSystem.writeAtomically(try remembered.encoded(), to: directory(name) + "/" + StagedSet.fileName)
                }
                try FileSystem.writeAtomically(
                    Data(BootEntries.loaderConfiguration(text, default: entry + ".conf").utf8), to: path)
                if let chosen = efiDefaultEntry(), chosen != entry + ".conf", chosen != entry {
                    done.append(
                        "systemd-boot: default \(entry).conf in \(path), but the EFI variable LoaderEntryDefault names \(quote(chosen)) and comes first: run bootctl set-default \(entry).conf")
                } else {
                    done.append("systemd-boot boots \(entry).conf by default (\(path))")
                }
            case .grub:
                let path = bootDirectory + "/grub/grubenv"
                let key = once ? "next_entry" : "saved_entry"
                let block = try BootEntries.grubEnvironment(FileSystem.contents(path), setting: key, to: entry)
                try FileSystem.writeAtomically(Data(block), to: path)
                let when = once ? "next time" : "by default"
                if let gap = grubMenuGap(entry: entry, once: once) {
                    done.append("GRUB: \(key)=\(entry) in \(path), but GRUB boots it \(when) only \(gap)")
                } else {
                    done.append("GRUB boots \(entry) \(when) (\(key) in \(path))")
                }
            }
        }
        return done
    }

    /// What GRUB's menu lacks for grubenv to choose `entry` (saved_entry, or with `once`
    /// next_entry, which every menu grub-mkconfig writes follows), in words; nil when it lacks
    /// nothing. The menu follows saved_entry only when /etc/default/grub says GRUB_DEFAULT=saved,
    /// and holds the entry once grub-mkconfig ran after the stage (or reads BLS entries, blscfg).
    private func grubMenuGap(entry: String, once: Bool) -> String? {
        let path = bootDirectory + "/grub/grub.cfg"
        let regenerate = "run grub-mkconfig -o \(path)"
        guard let menu = try? String(contentsOfFile: path, encoding: .utf8) else { return "once there is a menu: \(regenerate)" }
        let followsSaved = once || menu.contains("${saved_entry}")
        let holdsEntry = menu.contains("'\(entry)'") || menu.split(whereSeparator: \.isNewline).contains {
            $0.trimmingCharacters(in: .whitespaces) == "blscfg"
        }
        let lacks = [followsSaved ? nil : "follows saved_entry", holdsEntry ? nil : "holds the entry"].compactMap { $0 }
        guard !lacks.isEmpty else { return nil }
        let how = followsSaved ? regenerate : "set GRUB_DEFAULT=saved in /etc/default/grub, then \(regenerate)"
        return "once its menu \(lacks.joined(separator: " and ")): \(how)"
    }

    private func runTool(_ tool: String, _ arguments: [String]) throws -> Int32 {
        guard let path = FileSystem.executable(tool) else { throw BootError("\(tool) is not installed", code: .system) }
        let environment = ProcessInfo.processInfo.environment.map { "\($0.key)=\($0.value)" }
        return waitForExit(try spawn(path, arguments, environment: environment))
    }

    private func remove(_ image: StagedImage) throws {
        for path in [image.image] + image.bootFiles where unlink(path) != 0 && errno != ENOENT {
            throw SystemError("remove", path)
        }
        // What a stage cut short by a power cut may have left beside them (the kernel before it was
        // signed, the one signed for a unified kernel image).
        let folder = FileSystem.split(image.kernel).directory
        for name in Self.workFiles { unlink(folder + "/" + name) }
        rmdir(folder)
    }

    /// What a stage writes in a version's boot folder before it renames it into place, or removes:
    /// the kernel before it is signed, a unified kernel image's too.
    static let workFiles = ["vmlinuz.new", "vmlinuz.unsigned", "initramfs.img.new", "linux.efi.new", "linux.efi.unsigned"]

    private func entryPath(_ name: String, previous: Bool) -> String {
        bootDirectory + "/loader/entries/layerctl-\(name)\(previous ? "-previous" : "").conf"
    }

    private func removeEntry(_ name: String, previous: Bool) { unlink(entryPath(name, previous: previous)) }

    /// Writes `set` to its state file and its boot entries, synced together, then GRUB's script.
    private func save(_ set: StagedSet, in folder: String) throws {
        try FileSystem.makeDirectories(bootDirectory + "/loader/entries")
        var files = [
            (try set.encoded(), folder + "/" + StagedSet.fileName),
            (Data(BootEntries.specificationEntry(set.current, previous: false).utf8), entryPath(set.current.name, previous: false)),
        ]
        if let previous = set.previous {
            files.append((Data(BootEntries.specificationEntry(previous, previous: true).utf8), entryPath(previous.name, previous: true)))
        }
        try FileSystem.writeAtomically(files)
        if set.previous == nil { removeEntry(set.current.name, previous: true) }
        try writeGrubScript()
    }

    private func writeGrubScript() throws {
        guard let grubDirectory else { return }
        let path = grubDirectory + "/" + Self.grubScriptName
        let sets = try staged()
        if sets.isEmpty {
            unlink(path)
            return
        }
        try FileSystem.makeDirectories(grubDirectory)
        try FileSystem.writeAtomically(Data(BootEntries.grubScript(sets).utf8), to: path, mode: 0o755)
    }
}

extension BootStaging {
    /// Copies an image file for `stage`, checking first that it is a squashfs image whose every
    /// folder and inode the kernel will read as layerctl does (`ImageTree`: an image made or
    /// damaged to show the booted system what `diff` does not see is refused here, before it is on
    /// the boot partition), and returns its sha256. The copy is an unnamed file until it is whole
    /// and on disk: a stage killed while it copies leaves nothing to hold the disk's space.
    public static func copyImage(from source: String, to destination: String) throws -> String {
        _ = try ImageTree(image: source)
        let input = open(source, O_RDONLY | O_CLOEXEC)
        if input < 0 { throw SystemError("read", source) }
        defer { close(input) }
        let output = try ImageOutput(path: destination)
        _ = try FileSystem.copyData(from: input, source, to: output.fd, destination)
        return try output.commit(digesting: true) ?? Digest.sha256(file: destination)
    }
}
