/// `text` as one word of a POSIX shell command, for a command a user may paste: as it is when it
/// holds only what no shell reads specially, else in single quotes (a quote in it as `'\''`).
package func shellWord(_ text: String) -> String {
    let plain = !text.isEmpty && text.utf8.allSatisfy { byte in
        (0x30...0x39).contains(byte) || (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte)
            || "/._+-:@%=,".utf8.contains(byte)
    }
    return plain ? text : "'" + text.split(separator: "'", omittingEmptySubsequences: false).joined(separator: "'\\''") + "'"
}
