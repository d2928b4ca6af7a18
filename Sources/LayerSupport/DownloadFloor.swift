/// The slowest a download may come before it is stopped: less than `bytes` in `seconds` on end.
/// curl's own floor, as libalpm and most programs set it, is a byte a second, and a server that
/// sends a byte every half second, with no length or a large one, held the tool without end. The
/// same floor holds for libalpm's downloads (through curl's low speed limit: download_floor.c) and
/// for the registry client's; it is far below any real link.
package enum DownloadFloor {
    package static let bytes: Int64 = 32 << 10
    package static let seconds = 30
    /// As curl's low speed limit takes it.
    package static var bytesPerSecond: Int { Int(bytes) / seconds }
}
