import Foundation

/// The machine's memory, as `/proc/meminfo` gives it.
package enum MachineMemory {
    /// `MemTotal` in bytes; nil where `/proc/meminfo` cannot be read.
    package static var total: Int64? {
        guard let text = try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8) else { return nil }
        // "MemTotal:       24567892 kB"
        for line in text.split(separator: "\n") where line.hasPrefix("MemTotal:") {
            let fields = line.split(separator: " ")
            return fields.count >= 2 ? Int64(fields[1]).map { $0 * 1024 } : nil
        }
        return nil
    }
}
