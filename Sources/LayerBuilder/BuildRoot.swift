import CLayerSupport
import Foundation
import Glibc
import LayerSupport

/// The merged root a layer is built in: an overlay of the parents' trees under a new upper
/// directory, with `/proc`, `/sys`, `/dev`, `/run` and `/tmp` inside it. It lives in the builder's
/// private mount namespace, so every mount here dies with the builder.
struct BuildRoot {
    /// Holds `layer/tree` (the overlay's upper folder), `work`, `merged` and `empty`.
    let directory: String
    /// The trees below, bottom first.
    let lowerTrees: [String]
    /// A private copy of the sync databases to bind read-only in the root, when there is one.
    let syncDirectory: String?
    private(set) var mounted: [String] = []
    /// Directories this build created only to mount on, which the tree should not keep.
    private(set) var createdMountPoints: [String] = []
    private var createdResolvConf = false

    var upper: String { directory + "/layer/tree" }
    var work: String { directory + "/work" }
    var merged: String { directory + "/merged" }
    var empty: String { directory + "/empty" }

    init(directory: String, lowerTrees: [String], syncDirectory: String? = nil) {
        self.directory = directory
        self.lowerTrees = lowerTrees
        self.syncDirectory = syncDirectory
    }

    /// The modes Arch's `filesystem` package gives these directories; creating them any other way
    /// makes libalpm warn that permissions differ when `filesystem` is installed.
    static let mountPointModes: [(String, mode_t)] = [
        ("proc", 0o555), ("sys", 0o555), ("dev", 0o755), ("run", 0o755), ("tmp", 0o1777),
    ]

    mutating func setUp() throws {
        for directory in [upper, work, merged, empty] {
            try FileSystem.makeDirectories(directory)
        }
        if lowerTrees.isEmpty {
            // A root layer has nothing below it: writing straight into the upper directory gives
            // the same tree as an overlay would, without overlayfs's cost on every file created.
            try Mounter.bind(upper, at: merged)
        } else {
            let options = "lowerdir=\(lowerTrees.reversed().joined(separator: ":")),upperdir=\(upper),"
                + "workdir=\(work),redirect_dir=off,index=off,metacopy=off"
            try Mounter.mount("layerctl", at: merged, type: "overlay", options: options)
        }
        mounted.append(merged)

        for (name, mode) in Self.mountPointModes where !FileSystem.exists(merged + "/" + name) {
            try sys("create", merged + "/" + name) { mkdir(merged + "/" + name, mode) }
            _ = chmod(merged + "/" + name, mode)
        }
        try mount("proc", "proc", "proc", "nosuid,nodev,noexec")
        try mount("sysfs", "sys", "sysfs", "ro,nosuid,nodev,noexec")
        try mount("tmpfs", "dev", "tmpfs", "mode=0755,nosuid")
        try populateDev()
        try mount("tmpfs", "run", "tmpfs", "mode=0755,nosuid,nodev")
        try mount("tmpfs", "tmp", "tmpfs", "mode=1777,nosuid,nodev")

        // The sync databases come from outside, so the tree never holds them.
        guard let syncDirectory else { return }
        let sync = merged + "/var/lib/pacman/sync"
        if !FileSystem.exists(sync) {
            try FileSystem.makeDirectories(sync)
            createdMountPoints.append("var/lib/pacman/sync")
        }
        try Mounter.bind(syncDirectory + "/sync", at: sync, readOnly: true)
        mounted.append(sync)
    }

    private mutating func mount(_ source: String, _ relative: String, _ type: String, _ options: String) throws {
        try Mounter.mount(source, at: merged + "/" + relative, type: type, options: options)
        mounted.append(merged + "/" + relative)
    }

    /// The character devices of the build's /dev, by their fixed numbers (the kernel's
    /// Documentation/admin-guide/devices.txt).
    static let devices: [(name: String, major: UInt32, minor: UInt32)] = [
        ("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0),
    ]

    /// A minimal /dev of its own: new nodes for the harmless character devices (never the host's
    /// nodes bound in, whose mode and owner a command could change), a private devpts and shm.
    private mutating func populateDev() throws {
        let dev = merged + "/dev"
        for device in Self.devices {
            let node = dev + "/" + device.name
            try sys("create", node) { mknod(node, S_IFCHR | 0o666, dev_t(lc_makedev(device.major, device.minor))) }
            try sys("change mode of", node) { chmod(node, 0o666) }
        }
        try FileSystem.makeDirectories(dev + "/pts")
        try mount("devpts", "dev/pts", "devpts", "newinstance,ptmxmode=0666,mode=0620")
        try FileSystem.makeDirectories(dev + "/shm", mode: 0o1777)
        try mount("tmpfs", "dev/shm", "tmpfs", "mode=1777,nosuid,nodev")
        for (link, target) in [("ptmx", "pts/ptmx"), ("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                               ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")] {
            _ = symlink(target, dev + "/" + link)
        }
    }

    /// Shows the host's resolv.conf, read-only, while `run:` commands may need the network.
    mutating func bindResolvConf() throws {
        let target = merged + "/etc/resolv.conf"
        guard FileSystem.isDirectory(merged + "/etc"), FileSystem.exists("/etc/resolv.conf") else { return }
        var st = stat()
        if lstat(target, &st) == 0 {
            if (st.st_mode & S_IFMT) != S_IFREG { return }  // a symlink into /run: leave it be
        } else {
            let fd = try sys("create", target) { open(target, O_WRONLY | O_CREAT | O_CLOEXEC, 0o644) }
            close(fd)
            createdResolvConf = true
        }
        try Mounter.bind("/etc/resolv.conf", at: target, readOnly: true)
        mounted.append(target)
    }

    /// Unmounts everything, innermost first, and removes what was only there to mount on.
    mutating func tearDown() throws {
        for target in mounted.reversed() {
            try Mounter.unmount(target, lazy: true)
        }
        mounted.removeAll()
        if createdResolvConf { unlink(upper + "/etc/resolv.conf") }
        for relative in createdMountPoints {
            rmdir(upper + "/" + relative)  // only if still empty
        }
    }
}
