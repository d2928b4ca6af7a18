import Foundation
import Glibc
import LayerSupport

/// One staged version of an image: the image file the hook mounts, the kernel and initramfs the
/// boot loader loads, and the command line that ties them together.
public struct StagedImage: Codable, Sendable, Equatable {
    public var name: String
    /// The first 12 hex digits of the image's sha256: names its files and tells versions apart.
    public var id: String
    public var sha256: String
    public var size: UInt64
    /// The image file, and its path on the filesystem that holds it (what `layerctl.image=` says).
    public var image: String
    public var imageOnDevice: String
    public var deviceUUID: String
    /// The kernel and initramfs in the boot directory, and their paths on the boot partition. With
    /// `unifiedKernel`, the kernel is a unified kernel image that holds the initramfs (and the
    /// command line), and both initramfs paths are empty.
    public var kernel: String
    public var initrd: String
    public var kernelOnBoot: String
    public var initrdOnBoot: String
    public var bootUUID: String
    public var commandLine: String
    /// The layer key the image was exported from, or the image file it was copied from.
    public var source: String
    /// When it was staged, in UTC to the millisecond (ISO 8601): its entry's `version`, by which
    /// boot loaders order the entries of one sort key, the newest first.
    public var stagedAt: String
    /// The certificate whose key signed the staged kernel for Secure Boot; nil when it is the image's own.
    public var secureBootCertificate: String? = nil
    /// Whether `kernel` is a unified kernel image (`stage --uki`); nil when it is the kernel alone.
    public var unifiedKernel: Bool? = nil

    /// The files the boot loader reads: the kernel and initramfs, or the unified kernel image.
    public var bootFiles: [String] { unifiedKernel == true ? [kernel] : [kernel, initrd] }

    /// The time of a staging now, as `stagedAt` holds it.
    static func now() -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter.string(from: Date())
    }
}

/// The versions of one name: the current one, and the one before it, kept as the way back.
public struct StagedSet: Codable, Sendable, Equatable {
    public var current: StagedImage
    public var previous: StagedImage?
    /// The `default` of systemd-boot's loader.conf that `boot` replaced with this name's entry
    /// ("" when it named none), which `unstage` puts back when the name goes; nil when `boot`
    /// never did.
    public var replacedDefault: String? = nil

    public var versions: [StagedImage] { [current] + (previous.map { [$0] } ?? []) }

    static let fileName = "staged.json"

    static func load(_ directory: String) throws -> StagedSet? {
        let path = directory + "/" + fileName
        guard FileSystem.exists(path) else { return nil }
        guard let data = FileManager.default.contents(atPath: path) else { throw SystemError("read", path) }
        do { return try JSONDecoder().decode(StagedSet.self, from: data) } catch {
            throw BootError("\(path) is damaged (\(error)); remove the folder to forget what it staged", code: .damaged)
        }
    }

    /// The state file's bytes.
    func encoded() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return try encoder.encode(self)
    }
}

/// Where a file is as a boot loader or an initramfs sees it: on which filesystem (by UUID) and at
/// which path inside that filesystem.
struct DeviceLocation {
    var uuid: String
    var path: String
    var mountPoint: String
    /// The filesystem's device number.
    var device: UInt64

    /// Looks `path` (an existing file) up in the mount table, then the filesystem's UUID: from a
    /// location in `known` on the same filesystem, else in /dev/disk/by-uuid, or with blkid where
    /// udev made no links.
    init(of path: String, known: [DeviceLocation] = []) throws {
        let (inside, mount) = try Self.pathInside(path)
        self.path = inside
        self.mountPoint = mount.target
        self.device = mount.device
        if let uuid = known.first(where: { mount.device != 0 && $0.device == mount.device })?.uuid ?? Self.uuidFromLinks(device: mount.device)
            ?? Self.uuidFromBlkid(mount.source)
        {
            self.uuid = uuid
        } else {
            throw BootError(
                "cannot find the UUID of \(mount.source) (mounted on \(mount.target)), which holds \(path); the boot loader and the hook find the image by it",
                code: .system)
        }
    }

    /// The path of `path` (an existing file) inside its filesystem, and that filesystem's mount.
    static func pathInside(_ path: String) throws -> (path: String, mount: MountTable.Entry) {
        guard let real = realpath(path, nil) else { throw SystemError("find", path) }
        let absolute = String(cString: real)
        free(real)
        let mount = try MountTable().mount(holding: absolute)
        let inside = mount.target == "/" ? absolute : String(absolute.dropFirst(mount.target.count))
        return (mount.root == "/" ? inside : mount.root + inside, mount)
    }

    /// The bytes a path on the kernel command line (`layerctl.image=`) and on GRUB's `linux` line
    /// may hold: the kernel splits its command line at spaces, and GRUB reads quotes, `$`, `;`
    /// and `#` as its script's.
    static let commandLineSafe = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-+=:@,~%")

    /// Fails when the path inside its filesystem of `path`, a folder staging writes to (made later
    /// where it is not there yet), could not be carried to the boot loader and the hook; `option`
    /// is the one that chose it.
    static func checkCarried(_ path: String, option: String) throws {
        let (existing, rest) = FileSystem.existingPart(of: path)
        let found = try pathInside(existing).path
        let inside = (found == "/" ? "" : found) + rest
        if let bad = inside.first(where: { !commandLineSafe.contains($0) }) {
            throw BootError(
                "the folder \(path) is \(quote(inside)) on its filesystem: the kernel command line and GRUB's menu carry a path of letters, digits and / . _ - + = : @ , ~ % only, not \(quote(String(bad))); give \(option) a folder without it")
        }
    }

    /// Filesystems in memory, whose files are gone at the next boot. (An overlay may lie on a
    /// disk: only a running layerctl image's counts, below.)
    static let inMemory: Set<String> = ["tmpfs", "ramfs"]

    /// Fails when `path` (a folder that stage, unstage or boot changes, made later where it is not
    /// there yet; `option` chose it) is on a filesystem that forgets at the next boot: what they
    /// changed there would be gone, and no boot loader reads it. stage calls it before it makes the
    /// image. On a system that runs a layerctl image (the hook's `boot.env` in `runDirectory`), /
    /// is such a one, an overlay on a tmpfs, and the filesystem the image came from is mounted
    /// read-only beside it: the error says how to stage there.
    static func checkLasting(_ path: String, option: String, runDirectory: String) throws {
        let mount = try pathInside(FileSystem.existingPart(of: path).existing).mount
        let booted = BootStaging.booted(runDirectory: runDirectory)
        guard inMemory.contains(mount.fstype) || (booted != nil && mount.fstype == "overlay") else { return }
        var message = "\(path) is on \(mount.fstype == "overlay" ? "this system's overlay" : mount.fstype) (mounted on \(mount.target)), "
            + "whose files are gone at the next boot: what layerctl changed there would be too"
        guard let booted else { throw BootError(message + "; give \(option) a folder on a disk") }
        if option == "--boot-dir" || option == "--esp-dir" {
            let partition = option == "--esp-dir" ? "EFI system partition" : "boot partition (the ESP)"
            message += "; this system runs a layerctl image: mount its \(partition) on \(path) first, as the system "
                + "that staged the image has it, or give \(option) the folder where it is mounted"
        } else {
            // The image's folder holds the staged versions of its name; the one above, every name's.
            let image = booted["LAYERCTL_IMAGE"] ?? ""
            let parts = image.split(separator: "/")
            let state = image.hasPrefix("/") && !image.hasPrefix("/dev/") && parts.count >= 3
                ? "/" + parts.dropLast(2).joined(separator: "/") : "/var/lib/layerctl/boot"
            let device = runDirectory + "/device"
            if booted["LAYERCTL_TORAM"] == "1" {
                let given = booted["LAYERCTL_DEVICE"].flatMap { $0.isEmpty ? nil : $0 }
                let source = given.map(shellWord) ?? "DEVICE"
                // On btrfs the image's path starts at the top-level subvolume, and a plain mount
                // shows the default one, which `btrfs subvolume set-default` may have made another.
                let options = given.flatMap(fileSystemType) == "btrfs" ? "-o subvolid=5 " : ""
                message += "; this system runs a layerctl image copied to memory (layerctl.toram=1), and the filesystem it came "
                    + "from is not mounted: `mount \(options)\(source) /mnt`, then give --state-dir /mnt\(state)"
            } else {
                message += "; this system runs a layerctl image, and the filesystem it came from is mounted read-only on \(device): "
                    + "`mount -o remount,rw \(device)`, then give --state-dir \(device)\(state)"
            }
        }
        throw BootError(message)
    }

    /// The location of `name`, a file in this folder.
    func inside(_ name: String) -> DeviceLocation {
        var location = self
        location.path = (path == "/" ? "" : path) + "/" + name
        return location
    }

    private static func uuidFromLinks(device: UInt64) -> String? {
        guard let links = try? FileSystem.listDirectory("/dev/disk/by-uuid") else { return nil }
        for link in links {
            var st = stat()
            if stat("/dev/disk/by-uuid/" + link, &st) == 0 && UInt64(st.st_rdev) == device { return link }
        }
        return nil
    }

    /// The type of the filesystem on `device` (`/dev/…`, `UUID=`, `LABEL=`, `PARTUUID=`, as the
    /// kernel command line names it), read from the device; nil when blkid finds none.
    static func fileSystemType(_ device: String) -> String? { blkid("TYPE", of: device) }

    private static func uuidFromBlkid(_ source: String) -> String? {
        source.hasPrefix("/dev/") ? blkid("UUID", of: source) : nil
    }

    /// The value of blkid's `tag` for `device`, a path or a `NAME=value` that names one.
    private static func blkid(_ tag: String, of device: String) -> String? {
        // -p reads the device: blkid's cache (/run/blkid) keeps a device's UUID from before, and
        // gave a reused loop device the UUID of the filesystem it held before (an entry that
        // named a disk the machine does not have).
        let arguments = device.hasPrefix("/dev/") ? ["-p", device] : ["-l", "-t", device]
        guard let blkid = try? capture("/sbin/blkid", ["-o", "value", "-s", tag] + arguments, quiet: true) else { return nil }
        let value = String(decoding: blkid.output, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        return blkid.status == 0 && !value.isEmpty ? value : nil
    }
}
