import Foundation

/// A size for people: "882 B", "69.8 MiB", "1.0 GiB".
package func formatBytes(_ bytes: Int64) -> String {
    let units = ["B", "KiB", "MiB", "GiB"]
    var value = Double(bytes)
    var unit = 0
    while value >= 1024 && unit < units.count - 1 {
        value /= 1024
        unit += 1
    }
    return unit == 0 ? "\(bytes) B" : String(format: "%.1f %@", value, units[unit])
}

/// A size as people write it: bytes, or with a binary suffix (`512K`, `64M`, `8G`, `1T`; `KiB`,
/// `MiB`… and a trailing `B` are taken too), or `N%` of `whole`. nil for anything else.
package func parseByteSize(_ text: String, percentOf whole: Int64? = nil) -> Int64? {
    var text = text.trimmingCharacters(in: .whitespaces).uppercased()
    if text.hasSuffix("%") {
        guard let whole, let percent = Double(text.dropLast()), percent >= 0, percent <= 100 else { return nil }
        return Int64(Double(whole) * percent / 100)
    }
    if text.hasSuffix("IB") { text.removeLast(2) } else if text.hasSuffix("B") { text.removeLast() }
    let shifts: [Character: Int64] = ["K": 10, "M": 20, "G": 30, "T": 40]
    var shift: Int64 = 0
    if let last = text.last, let found = shifts[last] {
        shift = found
        text.removeLast()
    }
    guard let number = Double(text), number >= 0, number.isFinite, number * Double(Int64(1) << shift) < 0x1p62 else { return nil }
    return Int64(number * Double(Int64(1) << shift))
}
