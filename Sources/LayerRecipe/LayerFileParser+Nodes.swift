import Foundation
import LayerSupport
import Yams

/// Typed access to YAML nodes, each failure naming what was expected and where.
extension LayerFileParser {
    func at(_ node: Node) -> FileLocation {
        FileLocation(file: path, line: node.mark?.line ?? 1, column: node.mark?.column ?? 1)
    }

    func at(_ context: YamlError.Context) -> FileLocation {
        FileLocation(file: path, line: context.mark.line, column: context.mark.column)
    }

    func scalar(_ node: Node, what: String, allowingNUL: Bool = false) throws -> String {
        switch node {
        case .scalar(let scalar):
            // A program, a path or a URL ends at a NUL: the rest would be in the key, and not used.
            guard allowingNUL || !scalar.string.utf8.contains(0) else {
                throw LayerFileError(
                    "\(what) holds a NUL byte, which only a file's `content` may: a command, a path or a name ends at one",
                    at: at(node))
            }
            return scalar.string
        case .mapping(let mapping):
            // `- echo key: value`: a `: ` in unquoted text makes YAML read a mapping of one pair.
            let written = mapping.count == 1 && mapping.first.map { $0.key.scalar?.style == .plain } == true
            throw LayerFileError(
                "\(what) must be a single value, not a mapping"
                    + (written ? " (YAML reads unquoted text with `: ` in it as one; put the value in quotes)" : ""),
                at: at(node))
        case .sequence: throw LayerFileError("\(what) must be a single value, not a list", at: at(node))
        case .alias: throw LayerFileError("\(what) may not be an alias", at: at(node))
        }
    }

    func list(_ node: Node, what: String) throws -> [Node] {
        switch node {
        case .sequence(let sequence): return Array(sequence)
        case .scalar(let scalar) where scalar.string.isEmpty && scalar.style == .plain: return []
        case .scalar: throw LayerFileError("\(what) must be a list, not a single value", at: at(node))
        case .mapping: throw LayerFileError("\(what) must be a list, not a mapping", at: at(node))
        case .alias: throw LayerFileError("\(what) may not be an alias", at: at(node))
        }
    }

    func unknownKey(_ key: String, at node: Node, known: [String]) -> LayerFileError {
        var message = "unknown key \(quote(key))"
        if let suggestion = KeySuggestion.nearest(to: key, in: known) {
            message += "; did you mean `\(suggestion)`?"
        } else {
            message += "; known keys are " + known.map { "`\($0)`" }.joined(separator: ", ")
        }
        return LayerFileError(message, at: at(node))
    }

    func translate(_ error: YamlError) -> LayerFileError {
        let top = FileLocation(file: path, line: 1, column: 1)
        switch error {
        case .scanner(_, let problem, let mark, _), .parser(_, let problem, let mark, _),
            .composer(_, let problem, let mark, _):
            // libyaml's own words name its C function that sets the depth.
            var said = problem.hasPrefix("Maximum nesting level reached") ? "lists and mappings are nested more than 1,000 deep" : problem
            // What an editor's tab key puts in, and libyaml calls "a character that cannot start any token".
            if isTab(line: mark.line, column: mark.column) { said += " (a tab: YAML indents with spaces only)" }
            return LayerFileError(
                "not valid YAML: \(said)", at: FileLocation(file: path, line: mark.line, column: mark.column))
        case .duplicatedKeysInMapping(let duplicates, let context):
            // Yams names a key that is a list or a mapping "<uncovertable>".
            guard duplicates.allSatisfy({ $0 != "<uncovertable>" }) else {
                return LayerFileError("a key is written twice, and a key must be a single value", at: at(context))
            }
            return LayerFileError(
                "key \(duplicates.map(quote).joined(separator: ", ")) is written twice",
                at: secondOccurrence(of: duplicates.first ?? "", after: context.mark))
        case .reader(let problem, let offset, let value, _):
            // libyaml's reader stops at a byte YAML does not allow, such as NUL: say which, and where.
            let location = offset.map { LayerFileParser.location(ofByte: $0, in: Data(text.utf8), file: path) } ?? top
            let character = value >= 0 ? String(format: " (U+%04X)", value) : ""
            return LayerFileError("not valid YAML: \(problem)\(character)", at: location)
        default:
            return LayerFileError("not valid YAML: \(error)", at: top)
        }
    }

    /// Whether the character at `line` and `column` (from 1, as libyaml counts) is a tab.
    private func isTab(line: Int, column: Int) -> Bool {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        guard line >= 1, line <= lines.count, column >= 1 else { return false }
        let scalars = lines[line - 1].unicodeScalars
        return scalars.count >= column && scalars[scalars.index(scalars.startIndex, offsetBy: column - 1)] == "\t"
    }

    /// Yams points at the mapping; the mistake is the second time the key is written in it.
    private func secondOccurrence(of key: String, after mark: Mark) -> FileLocation {
        let lines = text.components(separatedBy: "\n")
        var seen = 0
        for index in (mark.line - 1)..<lines.count {
            let line = lines[index]
            let indent = line.prefix { $0 == " " || $0 == "-" }.count
            if line.dropFirst(indent).hasPrefix(key + ":") {
                seen += 1
                if seen == 2 { return FileLocation(file: path, line: index + 1, column: indent + 1) }
            }
        }
        return FileLocation(file: path, line: mark.line, column: mark.column)
    }
}
