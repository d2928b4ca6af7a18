import CAlpm

/// Iterates the `data` pointers of an `alpm_list_t`, which libalpm uses for every list it returns.
struct AlpmListSequence: Sequence, IteratorProtocol {
    private var node: UnsafeMutablePointer<alpm_list_t>?

    init(_ head: UnsafeMutablePointer<alpm_list_t>?) { node = head }

    mutating func next() -> UnsafeMutableRawPointer? {
        while let current = node {
            node = current.pointee.next
            if let data = current.pointee.data { return data }
        }
        return nil
    }
}

extension AlpmListSequence {
    /// The strings of a list of `char *`.
    var strings: [String] { map { String(cString: $0.assumingMemoryBound(to: CChar.self)) } }
}

/// Converts a C string that libalpm may leave NULL.
func string(_ pointer: UnsafePointer<CChar>?) -> String? {
    pointer.map { String(cString: $0) }
}
