import CMount
import Glibc

/// Mounts and unmounts through libmount's context API (`mnt_context_mount`, `mnt_context_umount`),
/// with helpers and fstab lookups turned off: every mount says exactly what it is.
public enum Mounter {
    /// A mount that failed, with libmount's explanation.
    public struct MountError: LayerError {
        public let operation: String
        public let target: String
        /// libmount's explanation.
        public let reason: String
        public var code: ErrorCode { .system }
        public var message: String { "\(operation) \(target) failed" }
        public var cause: (any Error)? { Reason(reason) }
    }

    /// Mounts `source` of `type` at `target` with `options` (`mnt_context_mount`).
    public static func mount(
        _ source: String, at target: String, type: String?, options: String? = nil, flags: UInt = 0
    ) throws {
        try withContext(operation: "mount \(type ?? "bind")", target: target) { context in
            mnt_context_set_source(context, source)
            mnt_context_set_target(context, target)
            if let type { mnt_context_set_fstype(context, type) }
            if let options { mnt_context_set_options(context, options) }
            if flags != 0 { mnt_context_set_mflags(context, flags) }
            return mnt_context_mount(context)
        }
    }

    /// Binds `source` onto `target`; read-only binds are remounted read-only as mount(8) does.
    public static func bind(_ source: String, at target: String, readOnly: Bool = false, recursive: Bool = false)
        throws
    {
        let flags = UInt(MS_BIND) | (recursive ? UInt(MS_REC) : 0) | (readOnly ? UInt(MS_RDONLY) : 0)
        try mount(source, at: target, type: nil, flags: flags)
    }

    /// Makes `target` and everything below it a slave of the host's mounts: nothing mounted here
    /// reaches the host, while the host's unmounts reach here, so a filesystem the host unmounts
    /// is not kept in use by this copy of it (a private copy held it, and with it its disk, until
    /// the build ended). Mounts that were private on the host stay private.
    public static func makeSlave(_ target: String) throws {
        try withContext(operation: "make slave", target: target) { context in
            mnt_context_set_target(context, target)
            mnt_context_set_mflags(context, UInt(MS_SLAVE) | UInt(MS_REC))
            return mnt_context_mount(context)
        }
    }

    /// Unmounts `target` (`mnt_context_umount`); `lazy` detaches even when busy.
    public static func unmount(_ target: String, lazy: Bool = false) throws {
        try withContext(operation: "unmount", target: target) { context in
            mnt_context_set_target(context, target)
            if lazy { mnt_context_enable_lazy(context, 1) }
            return mnt_context_umount(context)
        }
    }

    private static func withContext(
        operation: String, target: String, _ body: (OpaquePointer) -> Int32
    ) throws {
        guard let context = mnt_new_context() else {
            throw MountError(operation: operation, target: target, reason: "cannot create a libmount context")
        }
        defer { mnt_free_context(context) }
        mnt_context_disable_helpers(context, 1)
        mnt_context_disable_mtab(context, 1)
        mnt_context_disable_canonicalize(context, 1)
        mnt_context_disable_swapmatch(context, 1)
        mnt_context_set_optsmode(context, Int32(MNT_OMODE_NOTAB))
        let rc = body(context)
        if rc != 0 {
            var buffer = [CChar](repeating: 0, count: 1024)
            _ = mnt_context_get_excode(context, rc, &buffer, buffer.count)
            var message = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            let err = mnt_context_get_syscall_errno(context)
            if message.isEmpty { message = err != 0 ? Reason(errno: err).description : "libmount error \(rc)" }
            throw MountError(operation: operation, target: target, reason: message)
        }
    }
}
