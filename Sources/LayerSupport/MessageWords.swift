import Foundation

/// A stranger's words as a message quotes them: a value from a layer file, a name from a
/// registry's manifest. In backquotes, at most 40 characters (a 10 MB value is not echoed back
/// whole), control characters (C0, DEL and C1) escaped, so one mistake is one line.
public func quote(_ text: String) -> String {
    var shown = ""
    for (count, character) in text.enumerated() {
        if count == 40 {
            shown += "…"
            break
        }
        if let scalar = character.unicodeScalars.first, character.unicodeScalars.count == 1,
            scalar.value < 0x20 || (0x7F...0x9F).contains(scalar.value)
        {
            shown += String(format: "\\x%02X", scalar.value)
        } else {
            shown.append(character)
        }
    }
    return "`" + shown + "`"
}

/// "1 package", "2 packages": `count` and the noun, in the plural unless the count is one.
public func counted(_ count: Int, _ noun: String, plural: String? = nil) -> String {
    "\(count) " + (count == 1 ? noun : plural ?? noun + "s")
}

/// `text` cut to at most `characters` characters, ending with "…" when cut: for words a message
/// takes from a stranger that are not one value (libalpm's lines about a repository's packages).
public func clip(_ text: String, to characters: Int) -> String {
    guard text.count > characters else { return text }
    return String(text.prefix(characters - 1)) + "…"
}
