import Glibc

/// What kind of failure an error is. The command line maps each code to an exit status; `--json`
/// output and other programs that link the library read the code, never the wording.
public enum ErrorCode: String, Sendable, Codable, CaseIterable {
    /// What the user gave is wrong: a layer file (with its place), a layer name, key or image
    /// operand, an option's value.
    case input
    /// The command needs a privilege this process lacks (root, to read trusted.* attributes).
    case privilege
    /// libalpm failed: a package cannot be resolved, fetched, verified, or installed.
    case packages
    /// A build step failed: a `run:` command, the builder child, an initramfs generator, a tool.
    case build
    /// Something layerctl wrote is damaged: a store file, an image, a staged set.
    case damaged
    /// The system failed: a system call, a mount, a library's input or output.
    case system
}

/// The one error model of every target: a code, a message, and the error beneath it. Printed, it is
/// one line: the message, then `: ` and the cause when there is one. A message that has a cause
/// says what failed ("read /etc/x failed"); the cause says why.
public protocol LayerError: Error, CustomStringConvertible, Sendable {
    var code: ErrorCode { get }
    var message: String { get }
    var cause: (any Error)? { get }
}

extension LayerError {
    public var cause: (any Error)? { nil }
    /// The message, then `: ` and the cause when there is one.
    public var explanation: String { cause.map { "\(message): \($0)" } ?? message }
    public var description: String { explanation }
}

/// A library's own words for why something failed: `strerror`, `alpm_strerror`, libmount's or
/// libarchive's message. The end of a chain of causes.
public struct Reason: Error, CustomStringConvertible, Sendable, Equatable {
    public let description: String
    public init(_ description: String) { self.description = description }
    public init(errno: Int32) { description = String(cString: strerror(errno)) }
}

/// The code of any error: its own, or `system` for errors from outside the project (Foundation's,
/// for one), which are reported as they are.
public func errorCode(of error: any Error) -> ErrorCode {
    (error as? any LayerError)?.code ?? .system
}

/// An error met while writing into `staging`, the hidden folder beside `path` that becomes `path`
/// once whole (`FileSystem.stagingPath`): said of `path`, as the user named it, since the hidden
/// folder is gone by the time anyone reads the message.
package struct StagedPathError: LayerError {
    package let code: ErrorCode
    package let message: String
    package let cause: (any Error)?

    package init(_ error: any Error, staging: String, path: String) {
        code = errorCode(of: error)
        let layered = error as? any LayerError
        message = (layered?.message ?? "\(error)").replacingOccurrences(of: staging, with: path)
        cause = layered?.cause
    }
}

/// An image the user named that layerctl will not read: a pipe would hold the command until
/// something wrote to it, and a device's size is not its image's.
package struct RefusedInput: LayerError {
    package let message: String

    /// `named` is `special` ("a pipe"), where an image file belongs.
    package init(_ named: String, is special: String) {
        var text = "\(named) is \(special): an image is read from a file, never from a device, a pipe or a socket"
        if special == "a block device" {
            text += " (copy it into a file first with `dd if=\(named) of=IMAGE bs=4M`)"
        }
        message = text
    }

    package var code: ErrorCode { .input }
}

/// An output the user named that layerctl will not write: a device, a pipe or a socket where an
/// image file belongs (`FileSystem.outputTarget`).
package struct RefusedOutput: LayerError {
    package let message: String

    /// `named` leads to `special` ("a block device"), where `what` ("an image", "a folder
    /// export") cannot go.
    package init(_ named: String, is special: String, what: String) {
        var text = "\(named) is \(special): \(what) is written to a new file or folder, never into a device, a pipe or a socket"
        if special == "a block device" {
            text += " (put an image on a disk with `dd if=IMAGE of=\(named) bs=4M`, or boot it with `layerctl stage`)"
        }
        message = text
    }

    package var code: ErrorCode { .input }
}

/// A command that only root may run, run by another user: said first thing, before it fails at
/// the first step only root may take, in words about that step.
package struct NotRoot: LayerError {
    package let message: String

    /// Throws for `command` ("layerctl build") unless this process is root; `reason` says what of
    /// its work needs root.
    package static func require(_ command: String, because reason: String) throws {
        guard geteuid() != 0 else { return }
        throw NotRoot(message: "\(command) must run as root: \(reason); run layerctl with sudo")
    }

    package var code: ErrorCode { .privilege }
}

/// A command whose work needs `/` to be a mount point, run where it is none: in a chroot of a
/// folder that is no mount of its own (`chroot DIR`, where arch-chroot binds DIR onto itself
/// first). There the build's namespaces cannot keep their mounts from the host's (the kernel makes
/// only a mount point a slave), and no mount the process sees holds its files. Said first thing,
/// before it fails with "make slave / failed: not mount point or bad option".
package struct UnmountedRoot: LayerError {
    package let message: String

    /// Throws for `command` ("layerctl build") when `/` is no mount point; `reason` says what of
    /// its work needs one. Where the mount table cannot be read (no /proc), the work says so itself.
    package static func require(_ command: String, because reason: String) throws {
        guard let table = try? MountTable(), !table.entries.contains(where: { $0.target == "/" }) else { return }
        throw UnmountedRoot(
            message: "\(command) cannot run where / is no mount point, as in a chroot of a plain folder: \(reason); \(advice)")
    }

    /// What to do about it.
    package static let advice =
        "enter the chroot with arch-chroot, or bind-mount its folder onto itself (mount --bind DIR DIR) before chroot"

    package var code: ErrorCode { .system }
}
