import CSquashfs
import LayerSupport

/// A libsquashfs call that failed: what was attempted, where, and libsquashfs's error code in words.
public struct SquashfsError: LayerError {
    public let operation: String
    /// libsquashfs's error code (`SQFS_ERROR_…`).
    public let sqfsCode: Int32

    /// Whether the call read an image: a block that does not decompress is then the image's fault
    /// (damaged, or made so), not the compressor's.
    public let reading: Bool

    /// The system's reason for an input or output error, where the file knew it (a full disk);
    /// 0 when it did not.
    public let systemErrno: Int32

    public init(_ operation: String, _ code: Int32, reading: Bool = false, systemErrno: Int32 = 0) {
        self.operation = operation
        self.sqfsCode = code
        self.reading = reading
        self.systemErrno = systemErrno
    }

    /// A file that is no squashfs image at all is the wrong operand; an image that breaks the format
    /// is damaged; memory, input and output are the system's.
    public var code: ErrorCode {
        switch sqfsCode {
        case SFQS_ERROR_SUPER_MAGIC.rawValue: .input
        case SQFS_ERROR_COMPRESSOR.rawValue where reading: .damaged
        case SQFS_ERROR_ALLOC.rawValue, SQFS_ERROR_IO.rawValue, SQFS_ERROR_INTERNAL.rawValue,
            SQFS_ERROR_COMPRESSOR.rawValue, SQFS_ERROR_SEQUENCE.rawValue, SQFS_ERROR_ARG_INVALID.rawValue:
            .system
        default: .damaged
        }
    }

    public var message: String { "\(operation) failed" }
    public var cause: (any Error)? {
        if sqfsCode == SQFS_ERROR_IO.rawValue && systemErrno != 0 { return Reason(errno: systemErrno) }
        return Reason(reading && sqfsCode == SQFS_ERROR_COMPRESSOR.rawValue ? "a block does not decompress" : Self.text(sqfsCode))
    }

    static func text(_ code: Int32) -> String {
        switch code {
        case SQFS_ERROR_ALLOC.rawValue: "out of memory"
        case SQFS_ERROR_IO.rawValue: "input/output error"
        case SQFS_ERROR_COMPRESSOR.rawValue: "the compressor failed"
        case SQFS_ERROR_INTERNAL.rawValue: "internal error in libsquashfs"
        case SQFS_ERROR_CORRUPTED.rawValue: "data is corrupted"
        case SQFS_ERROR_UNSUPPORTED.rawValue: "not supported by squashfs"
        case SQFS_ERROR_OVERFLOW.rawValue: "a size or count overflows the format"
        case SQFS_ERROR_OUT_OF_BOUNDS.rawValue: "an offset is out of bounds"
        // libsquashfs spells these two SFQS_.
        case SFQS_ERROR_SUPER_MAGIC.rawValue: "not a squashfs image (no squashfs magic)"
        case SFQS_ERROR_SUPER_VERSION.rawValue: "a squashfs version this reader does not know"
        case SQFS_ERROR_SUPER_BLOCK_SIZE.rawValue: "an invalid block size in the superblock"
        case SQFS_ERROR_NOT_DIR.rawValue: "not a directory"
        case SQFS_ERROR_NO_ENTRY.rawValue: "no such file or directory"
        case SQFS_ERROR_LINK_LOOP.rawValue: "too many levels of symbolic links"
        case SQFS_ERROR_NOT_FILE.rawValue: "not a regular file"
        case SQFS_ERROR_ARG_INVALID.rawValue: "invalid argument"
        case SQFS_ERROR_SEQUENCE.rawValue: "calls out of sequence"
        default: "libsquashfs error \(code)"
        }
    }
}

/// An image refused for what the reader found in it, not for a libsquashfs call that failed: one
/// line that names the image and says what is wrong.
public struct ImageRefusal: LayerError {
    public let code: ErrorCode
    public let message: String

    /// An image that breaks the format, or that the kernel would read otherwise.
    static func damaged(_ image: String, _ what: String) -> ImageRefusal {
        ImageRefusal(code: .damaged, message: "read \(image): a damaged image: \(what)")
    }

    /// An image in a format the kernel does not read at all.
    static func unreadable(_ image: String, _ why: String) -> ImageRefusal {
        ImageRefusal(code: .damaged, message: "read \(image): \(why)")
    }
}

/// Runs a libsquashfs call that returns 0 or a negative `SQFS_ERROR`.
func sqfs(_ operation: @autoclosure () -> String, _ call: () -> Int32) throws {
    let status = call()
    if status != 0 { throw SquashfsError(operation(), status) }
}

/// `sqfs` for a call that reads an image (`SquashfsError.reading`).
func sqfsRead(_ operation: @autoclosure () -> String, _ call: () -> Int32) throws {
    let status = call()
    if status != 0 { throw SquashfsError(operation(), status, reading: true) }
}

/// A stack with more distinct owners and groups than a squashfs image holds
/// (`SquashfsWriter.idLimit`): a tar or a folder holds them.
public struct TooManyIds: LayerError {
    /// "owner" or "group".
    public let role: String
    public let id: UInt32
    /// The entry whose id is the first past the limit, in the order the image lists its inodes, as
    /// `RawPath.display` shows it.
    public let path: String

    public var code: ErrorCode { .input }
    public var message: String {
        "the stack has more than 65,535 distinct owners and groups (uids and gids together), all that a squashfs "
            + "image holds: the first past them is the \(role) \(id) of \(path); a tar or a folder holds them "
            + "(export --format tar, or dir)"
    }
}
