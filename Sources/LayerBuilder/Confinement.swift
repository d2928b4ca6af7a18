import CLayerSupport
import Foundation
import Glibc
import LayerSupport

/// What the processes of a build (libalpm and its scriptlets, `run:`, `files:`, mkinitcpio or
/// dracut) may see and do: what container runtimes give a build by default (runc's masked and
/// read-only paths, its capability set and seccomp profile; bubblewrap's pivot into a new root).
///
/// Namespaced work enters it once it has mounted the root, before it runs anything of the
/// layer's. In a mount namespace of its own it mounts kernel filesystems made for the build into
/// the merged root, binds the few host files the work needs, and pivots into the root, detaching
/// the host's; then it gives up every privilege a build has no use for. From then on "/" is the layer: no path,
/// and nothing in /proc, leads to a host file or a host process, and what is refused fails with
/// the command's own error.
struct Confinement {
    /// A host file or folder shown in the root. The build never writes to it.
    struct Bind {
        var source: String
        /// Absolute inside the root. Under /run (a tmpfs of the build) it is created; anywhere else
        /// it must be there already (`BuildRoot` makes it).
        var target: String
        var writes = Writes.refused

        enum Writes {
            /// Read-only: a write fails with "Read-only file system".
            case refused
            /// A folder the build may change as it likes, for nothing: the changes go to a
            /// tmpfs of the build's that nothing else reaches, and are gone with the build.
            case discarded
        }
    }

    /// The merged root, mounted already.
    let root: String
    var binds: [Bind] = []
    /// The size of /run, /tmp and /dev/shm, in bytes; nil for the kernel's default (half the
    /// machine's memory each).
    var tmpfsSize: Int64?

    /// Moves into a mount namespace of its own, mounts the build's /dev, /proc, /sys, /run and
    /// /tmp and the binds, and pivots into the root.
    func enter() throws {
        let unshared = lc_unshare_mount_namespace()
        if unshared != 0 { throw SystemError("create a mount namespace for", root, errno: unshared) }
        try mountDev()
        try mountProc()
        try mountSys()
        try mount("tmpfs", "/run", "tmpfs", "mode=0755,nosuid,nodev" + sizeOption)
        try mount("tmpfs", "/tmp", "tmpfs", "mode=1777,nosuid,nodev" + sizeOption)
        for bind in binds {
            let target = root + bind.target
            if bind.target.hasPrefix("/run/") && !FileSystem.exists(target) {
                if FileSystem.isDirectory(bind.source) {
                    try FileSystem.makeDirectories(target)
                } else {
                    try FileSystem.makeDirectories(FileSystem.parent(of: target))
                    let fd = try sys("create", target) { open(target, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600) }
                    close(fd)
                }
            }
            switch bind.writes {
            case .refused: try Mounter.bind(bind.source, at: target, readOnly: true)
            case .discarded: try mountDiscardingWrites(bind.source, at: target)
            }
        }
        let pivoted = lc_pivot_root(root)
        if pivoted != 0 { throw SystemError("make the root of the build", root, errno: pivoted) }
    }

    private var sizeOption: String { tmpfsSize.map { ",size=\($0)" } ?? "" }

    /// An overlay of the folder `source` at `target`, whose upper folder is on a tmpfs of its own
    /// that is detached once the overlay holds it: no path of the build reaches the changes but
    /// through `target`.
    private func mountDiscardingWrites(_ source: String, at target: String) throws {
        let changes = root + BuildRoot.buildOwnFolder + "/changes"
        try FileSystem.makeDirectories(changes)
        try Mounter.mount("tmpfs", at: changes, type: "tmpfs", options: "mode=0700,nosuid,nodev" + sizeOption)
        for folder in ["upper", "work"] { try FileSystem.makeDirectories(changes + "/" + folder) }
        try BuildRoot.mountOverlay(
            lowers: [source], upper: changes + "/upper", work: changes + "/work", at: target, options: "nodev,nosuid")
        try Mounter.unmount(changes, lazy: true)
        _ = rmdir(changes)
    }

    private func mount(_ source: String, _ path: String, _ type: String, _ options: String) throws {
        try Mounter.mount(source, at: root + path, type: type, options: options)
    }

    // MARK: The kernel's filesystems

    /// The character devices of the build's /dev, by their fixed numbers (the kernel's
    /// Documentation/admin-guide/devices.txt).
    static let devices: [(name: String, major: UInt32, minor: UInt32)] = [
        ("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0),
    ]

    /// A minimal /dev of its own: new nodes for the harmless character devices (never the host's
    /// nodes bound in, whose mode and owner a command could change), a private devpts and shm.
    /// It is the one place in the build where a device node can be opened, so it is read-only
    /// once made: no command adds a node to it, or changes one.
    private func mountDev() throws {
        try mount("tmpfs", "/dev", "tmpfs", "mode=0755,nosuid")
        let dev = root + "/dev"
        for device in Self.devices {
            let node = dev + "/" + device.name
            try sys("create", node) { mknod(node, S_IFCHR | 0o666, dev_t(lc_makedev(device.major, device.minor))) }
            try sys("change mode of", node) { chmod(node, 0o666) }
        }
        try FileSystem.makeDirectories(dev + "/pts")
        try mount("devpts", "/dev/pts", "devpts", "newinstance,ptmxmode=0666,mode=0620,nosuid,noexec")
        try FileSystem.makeDirectories(dev + "/shm", mode: 0o1777)
        try mount("tmpfs", "/dev/shm", "tmpfs", "mode=1777,nosuid,nodev" + sizeOption)
        for (link, target) in [
            ("ptmx", "pts/ptmx"), ("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"),
        ] {
            _ = symlink(target, dev + "/" + link)
        }
        try Mounter.mount("tmpfs", at: dev, type: nil, flags: UInt(MS_REMOUNT) | UInt(MS_RDONLY) | UInt(MS_NOSUID))
    }

    /// Parts of /proc that reach past the build's namespaces into the kernel: read-only.
    static let readOnlyProc = ["/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus", "/proc/fs"]
    /// Parts of /proc and /sys that show the host's memory, keys, timers and firmware: hidden, under
    /// /dev/null (files) or an empty read-only tmpfs (folders).
    static let masked = [
        "/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/latency_stats", "/proc/sched_debug",
        "/proc/timer_stats", "/proc/acpi", "/proc/asound", "/proc/scsi", "/sys/firmware",
        "/sys/devices/virtual/powercap",
    ]

    /// A /proc of the build's own pid namespace, so it shows the build's processes only.
    private func mountProc() throws {
        try mount("proc", "/proc", "proc", "nosuid,nodev,noexec")
        for path in Self.readOnlyProc where FileSystem.exists(root + path) {
            try Mounter.bind(root + path, at: root + path, readOnly: true)
        }
        try mask(Self.masked.filter { $0.hasPrefix("/proc/") })
    }

    /// sysfs of the build's network namespace, read-only; without CAP_SYS_ADMIN and with mount
    /// refused, it cannot be made writable again.
    private func mountSys() throws {
        try mount("sysfs", "/sys", "sysfs", "ro,nosuid,nodev,noexec")
        try mask(Self.masked.filter { $0.hasPrefix("/sys/") })
    }

    private func mask(_ paths: [String]) throws {
        for path in paths {
            var st = stat()
            guard lstat(root + path, &st) == 0 else { continue }  // not in this kernel
            if (st.st_mode & S_IFMT) == S_IFDIR {
                try Mounter.mount(
                    "tmpfs", at: root + path, type: "tmpfs", options: "size=0,mode=0555", flags: UInt(MS_RDONLY))
            } else {
                try Mounter.bind(root + "/dev/null", at: root + path, readOnly: true)
            }
        }
    }

    // MARK: Privileges

    /// What package scriptlets need, and no more: the capabilities container runtimes keep by
    /// default. CAP_SYS_ADMIN (mount, and much else), CAP_SYS_PTRACE, CAP_SYS_MODULE, CAP_NET_ADMIN,
    /// CAP_SYS_TIME and the rest are gone, for good.
    static let capabilities: [Int32] = [
        CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_FOWNER, CAP_FSETID, CAP_KILL, CAP_SETGID, CAP_SETUID, CAP_SETPCAP,
        CAP_NET_BIND_SERVICE, CAP_SYS_CHROOT, CAP_MKNOD, CAP_AUDIT_WRITE, CAP_SETFCAP,
    ]

    /// System calls a build has no business making, refused with EPERM: those runtimes' default
    /// seccomp profiles refuse. Mounting and namespaces (a new user namespace would give back every
    /// capability within it), the kernel's modules, keys, clock, swap and reboot, tracing other
    /// processes, and loading BPF.
    static let refusedSystemCalls = [
        "mount", "umount", "umount2", "pivot_root",
        "move_mount", "open_tree", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr",
        "unshare", "setns",
        "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "create_module",
        "query_module", "get_kernel_syms", "reboot", "swapon", "swapoff", "acct",
        "keyctl", "add_key", "request_key",
        "bpf", "perf_event_open", "userfaultfd", "fanotify_init", "lookup_dcookie",
        "ptrace", "process_vm_readv", "process_vm_writev", "kcmp",
        "settimeofday", "stime", "clock_settime", "clock_adjtime",
        "iopl", "ioperm", "syslog", "quotactl", "quotactl_fd", "nfsservctl", "uselib", "vhangup",
        "open_by_handle_at", "name_to_handle_at", "sysfs", "_sysctl", "ustat", "vm86", "vm86old",
    ]

    /// Confines this process with Landlock to reading `readable` and writing `writable` (and
    /// below); returns 0, EOPNOTSUPP where the kernel has no Landlock, or the errno it failed with.
    static func landlock(readable: [String], writable: [String]) -> Int32 {
        withCStrings(readable) { read in
            withCStrings(writable) { write in
                lc_landlock_confine(
                    UnsafeRawPointer(read).assumingMemoryBound(to: UnsafePointer<CChar>?.self), Int32(readable.count),
                    UnsafeRawPointer(write).assumingMemoryBound(to: UnsafePointer<CChar>?.self), Int32(writable.count))
            }
        }
    }

    /// Gives up, for this process and all it starts, every capability but `kept`, the
    /// chance to gain one (no_new_privs), and the system calls in `refusedSystemCalls`. The process
    /// becomes not dumpable: its /proc entries are closed to the commands it runs. Nothing it starts
    /// dumps core. Where the kernel has Landlock's scopes (6.12 and later), nothing it starts
    /// reaches an abstract unix socket of the host's either: with the host's network (`network:
    /// true`, `layerctl shell`) those are the host's services' (a container runtime's shims, a
    /// session bus, X11), and the build is root. Returns whether that scope holds. Without
    /// `scoping`, the caller's own Landlock domain has the scopes already (one domain, not two,
    /// for the kernel to check on every path).
    @discardableResult
    static func dropPrivileges(keeping kept: [Int32] = capabilities, scoping: Bool = true) throws -> Bool {
        let limited = kept.withUnsafeBufferPointer { lc_limit_privileges($0.baseAddress, Int32($0.count)) }
        if limited != 0 { throw SystemError("give up the privileges of", "the build", errno: limited) }
        let scoped = scoping ? lc_scope_landlock() : EOPNOTSUPP
        if scoped != 0 && scoped != EOPNOTSUPP {
            throw SystemError("scope with Landlock", "the build", errno: scoped)
        }
        var failed: UnsafePointer<CChar>?
        let names = refusedSystemCalls.map { strdup($0) }
        defer { names.forEach { free($0) } }
        let filtered = names.map { UnsafePointer<CChar>($0) }.withUnsafeBufferPointer {
            lc_refuse_system_calls($0.baseAddress, Int32($0.count), EPERM, &failed)
        }
        if filtered != 0 {
            throw SystemError(
                "filter the system call \(failed.map { String(cString: $0) } ?? "?") of", "the build", errno: filtered)
        }
        return scoped == 0
    }
}
