import LayerRecipe
import LayerStore
import Testing

/// NameShape and Store.isLayerName match names byte by byte where they used Regex literals: every
/// string of up to four bytes (five for owners, six for modes) from an alphabet of the bytes that
/// matter to a shape, and some that do not, is taken or refused as the pattern it replaced would.
@Suite("Name shapes")
struct NameShapeTests {
    /// Every string of `alphabet`'s items, from none to `longest` of them.
    static func strings(_ alphabet: [String], upTo longest: Int) -> [String] {
        var all = [""]
        var last = [""]
        for _ in 0..<longest {
            last = last.flatMap { prefix in alphabet.map { prefix + $0 } }
            all += last
        }
        return all
    }

    /// The strings on which `shape` and `pattern` disagree.
    static func disagreements(_ alphabet: [String], upTo longest: Int, _ pattern: Regex<AnyRegexOutput>, _ shape: (String) -> Bool) -> [String] {
        strings(alphabet, upTo: longest).filter { shape($0) != ($0.wholeMatch(of: pattern) != nil) }
    }

    // A byte of two UTF-8 bytes, a combining accent, an Arabic-Indic digit, a space and a NUL.
    static let foreign = ["é", "\u{301}", "\u{663}", " ", "\0"]

    @Test("package names, with a repository and a version, as the patterns took them")
    func packageNames() throws {
        let alphabet = ["a", "z", "0", "@", ".", "_", "+", "-", "/", "<", "=", ">", ":", "~", "A"] + Self.foreign
        let bare = try Regex(#"([a-z0-9][a-z0-9._-]*\/)?[a-z0-9@_+][a-z0-9@._+-]*"#)
        let versioned = try Regex(#"([a-z0-9][a-z0-9._-]*\/)?[a-z0-9@_+][a-z0-9@._+-]*(<|<=|=|>=|>)[A-Za-z0-9._:+~-]+"#)
        #expect(Self.disagreements(alphabet, upTo: 4, bare) { NameShape.isPackageName($0, versioned: false) } == [])
        let either = Self.strings(alphabet, upTo: 4).filter { text in
            NameShape.isPackageName(text, versioned: true) != (text.wholeMatch(of: bare) != nil || text.wholeMatch(of: versioned) != nil)
        }
        #expect(either == [])
        #expect(NameShape.isPackageName("core/linux>=6.6.1.arch1-1", versioned: true))
        #expect(!NameShape.isPackageName("core/linux>=6.6", versioned: false))
    }

    @Test("modes, owners, variable names, ignore: patterns and layer names, as the patterns took them")
    func otherNames() throws {
        #expect(Self.disagreements(["0", "4", "7", "8", "a"] + Self.foreign, upTo: 6, try Regex("0?[0-7]{3,4}")) { NameShape.isMode($0) } == [])
        let account = ["a", "Z", "0", "_", ".", "-", ":"] + Self.foreign
        let owner = try Regex("[A-Za-z0-9_][A-Za-z0-9_.-]*(:[A-Za-z0-9_][A-Za-z0-9_.-]*)?")
        #expect(Self.disagreements(account, upTo: 5, owner) { NameShape.isOwner($0) } == [])
        let variable = try Regex("[A-Za-z_][A-Za-z0-9_]*")
        #expect(Self.disagreements(["a", "Z", "_", "0", "-", "="] + Self.foreign, upTo: 4, variable) { NameShape.isVariable($0) } == [])
        let pattern = try Regex(#"[a-z0-9@._+*?\[\]-]+"#)
        let patternBytes = ["a", "0", "@", ".", "_", "+", "*", "?", "[", "]", "-", "/", "A", "!"] + Self.foreign
        #expect(Self.disagreements(patternBytes, upTo: 4, pattern) { NameShape.isIgnorePattern($0) } == [])
        let layer = try Regex("[A-Za-z0-9][A-Za-z0-9._+-]*")
        #expect(Self.disagreements(["a", "Z", "0", ".", "_", "+", "-", "/", "\n"] + Self.foreign, upTo: 4, layer) { Store.isLayerName($0) } == [])
        #expect(Store.isLayerName(String(repeating: "a", count: 100)) && !Store.isLayerName(String(repeating: "a", count: 101)))
    }

    @Test("days: each place of 2024-06-01 changed to each byte; digits of other scripts are refused, which \\d took")
    func days() {
        let day = Array("2024-06-01")
        for index in day.indices {
            for replacement in ["0", "9", "-", "/", "a", ":", "\u{663}", "é", ""] {
                var changed = day.map(String.init)
                changed[index] = replacement
                let text = changed.joined()
                let digitsAt = { (places: [Int]) in places.allSatisfy { changed[$0].utf8.count == 1 && "0123456789".contains(changed[$0]) } }
                let shaped = text.utf8.count == 10 && digitsAt([0, 1, 2, 3, 5, 6, 8, 9])
                #expect(NameShape.isDay(text) == (shaped && changed[4] == "-" && changed[7] == "-"), "\(text)")
                #expect(NameShape.isDay(text, slashes: true) == (shaped && "-/".contains(changed[4]) && "-/".contains(changed[7])), "\(text)")
            }
        }
        #expect(NameShape.isDay("2024/06-01", slashes: true) && !NameShape.isDay("2024/06/01"))
    }
}
