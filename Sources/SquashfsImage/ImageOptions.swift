import CSquashfs
import Glibc
import LayerSupport

/// How a squashfs image is compressed: the compressor, its level, the block size and the number of
/// compression workers. Everything but `jobs` is part of the image; `jobs` never changes a byte.
public struct ImageOptions: Sendable, Equatable {
    public enum Compressor: String, Sendable, CaseIterable {
        case zstd, xz, gzip, lz4

        var id: SQFS_COMPRESSOR {
            switch self {
            case .zstd: SQFS_COMP_ZSTD
            case .xz: SQFS_COMP_XZ
            case .gzip: SQFS_COMP_GZIP
            case .lz4: SQFS_COMP_LZ4
            }
        }

        /// Accepted levels; lz4 has none (its one option is `hc`, written as level 1).
        var levels: ClosedRange<UInt32> {
            switch self {
            case .zstd: UInt32(SQFS_ZSTD_MIN_LEVEL)...UInt32(SQFS_ZSTD_MAX_LEVEL)
            case .xz: UInt32(SQFS_XZ_MIN_LEVEL)...UInt32(SQFS_XZ_MAX_LEVEL)
            case .gzip: UInt32(SQFS_GZIP_MIN_LEVEL)...UInt32(SQFS_GZIP_MAX_LEVEL)
            case .lz4: 0...1
            }
        }

        var defaultLevel: UInt32 {
            switch self {
            case .zstd: UInt32(SQFS_ZSTD_DEFAULT_LEVEL)
            case .xz: UInt32(SQFS_XZ_DEFAULT_LEVEL)
            case .gzip: UInt32(SQFS_GZIP_DEFAULT_LEVEL)
            case .lz4: 0
            }
        }
    }

    public var compressor: Compressor
    public var level: UInt32
    public var blockSize: UInt32
    public var jobs: Int

    /// zstd at level 15 in 128 KiB blocks: see the README's "Image format" for why.
    public static let defaultCompression = "zstd:15"
    public static let defaultBlockSize: UInt32 = 128 * 1024

    public init(
        compressor: Compressor = .zstd, level: UInt32? = nil, blockSize: UInt32 = defaultBlockSize, jobs: Int = 0
    ) {
        self.compressor = compressor
        self.level = level ?? compressor.defaultLevel
        self.blockSize = blockSize
        self.jobs = jobs > 0 ? jobs : Self.onlineCores()
    }

    /// Parses `zstd[:LEVEL]`, `xz[:LEVEL]`, `gzip[:LEVEL]` or `lz4[:hc]` and a block size such as
    /// `131072`, `128K` or `1M` (a power of two from 4 KiB to 1 MiB).
    public init(compression: String, blockSize: String? = nil, jobs: Int? = nil) throws {
        let parts = compression.split(separator: ":", maxSplits: 1).map(String.init)
        guard let name = parts.first, let compressor = Compressor(rawValue: name.lowercased()) else {
            throw ImageOptionsError("unknown compressor '\(compression)'; use zstd, xz, gzip or lz4, as in zstd:15")
        }
        var level = compressor.defaultLevel
        if parts.count == 2 {
            if compressor == .lz4 {
                guard parts[1] == "hc" else { throw ImageOptionsError("lz4 takes no level; use lz4 or lz4:hc") }
                level = 1
            } else {
                guard let value = UInt32(parts[1]), compressor.levels.contains(value) else {
                    throw ImageOptionsError(
                        "\(name) level '\(parts[1])' is out of range \(compressor.levels.lowerBound)–\(compressor.levels.upperBound)"
                    )
                }
                level = value
            }
        }
        var size = Self.defaultBlockSize
        if let blockSize { size = try Self.parseBlockSize(blockSize) }
        if let jobs, jobs < 1 { throw ImageOptionsError("--jobs must be at least 1") }
        self.init(compressor: compressor, level: level, blockSize: size, jobs: jobs ?? 0)
    }

    /// The words that name these settings, as accepted by `--compression`, e.g. `zstd:15`.
    public var compressionName: String {
        compressor == .lz4 ? (level == 1 ? "lz4:hc" : "lz4") : "\(compressor.rawValue):\(level)"
    }

    /// A size in bytes written as a number with an optional unit: K, M, G or T (powers of 1024,
    /// also as KiB … TiB). Anything else after the digits is an error naming `what`.
    public static func parseSize(_ text: String, what: String) throws -> UInt64 {
        let upper = text.uppercased()
        let digits = upper.prefix { $0.isNumber }
        let units: [String: UInt64] = [
            "": 1, "B": 1, "K": 1 << 10, "KIB": 1 << 10, "M": 1 << 20, "MIB": 1 << 20, "G": 1 << 30, "GIB": 1 << 30,
            "T": 1 << 40, "TIB": 1 << 40,
        ]
        guard let value = UInt64(digits), let unit = units[String(upper.dropFirst(digits.count))] else {
            throw ImageOptionsError("\(what) '\(text)' is not a size such as 512M or 4G")
        }
        let (size, overflow) = value.multipliedReportingOverflow(by: unit)
        guard !overflow else { throw ImageOptionsError("\(what) '\(text)' is too large") }
        return size
    }

    static func parseBlockSize(_ text: String) throws -> UInt32 {
        let size = try parseSize(text, what: "block size")
        guard size >= 4096, size <= 1 << 20, size & (size - 1) == 0 else {
            throw ImageOptionsError("block size '\(text)' must be a power of two from 4K to 1M")
        }
        return UInt32(size)
    }

    /// The compressor configuration libsquashfs is created with.
    func configuration() throws -> sqfs_compressor_config_t {
        var config = sqfs_compressor_config_t()
        let status = sqfs_compressor_config_init(&config, compressor.id, Int(blockSize), 0)
        if status != 0 { throw SquashfsError("configure \(compressionName)", status) }
        if compressor == .lz4 {
            if level == 1 { config.flags |= UInt16(SQFS_COMP_FLAG_LZ4_HC.rawValue) }
        } else {
            config.level = level
        }
        return config
    }

    static func onlineCores() -> Int {
        max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN)))
    }
}

/// An image option's value that cannot be used.
public struct ImageOptionsError: LayerError {
    public let message: String
    init(_ message: String) { self.message = message }
    public var code: ErrorCode { .input }
}
