import CCurl
import Foundation
import Glibc
import LayerSupport

/// One HTTP request, made with libcurl: the library pacman itself fetches with, already linked
/// through libalpm, with the system's CA certificates, proxies (`https_proxy`) and HTTP/2.
struct HTTPRequest {
    enum Body {
        case none
        case data(Data)
        /// `length` bytes of the open file `descriptor` from `offset`.
        case file(descriptor: Int32, offset: Int64, length: Int64)
    }

    var method: String
    var url: String
    /// `Name: value` lines. An `Authorization` header is never sent on to another host when a
    /// redirect leads there (libcurl's rule).
    var headers: [String] = []
    var body: Body = .none
}

struct HTTPResponse {
    var status: Int
    /// The last response's headers (after redirects), names lowercased.
    var headers: [(name: String, value: String)]
    /// The body, unless a sink took it.
    var body: Data

    func header(_ name: String) -> String? { headers.last { $0.name == name }?.value }
}

/// A request that did not get a response: no connection, a dropped one, a timeout, a TLS failure.
struct TransportError: Error, CustomStringConvertible {
    let code: CURLcode
    let detail: String
    var description: String { detail }

    /// The server's doing: a redirect to what layerctl does not follow (`file:`, plain HTTP from
    /// HTTPS, a sixth redirect), or a response that breaks HTTP (a header line with no colon, one
    /// longer than libcurl takes, headers without end). Requests name http or https URLs of the
    /// registry's own, so only a redirect leads to the first.
    var isTheServers: Bool { [CURLE_UNSUPPORTED_PROTOCOL, CURLE_TOO_MANY_REDIRECTS, CURLE_WEIRD_SERVER_REPLY].contains(code) }

    /// Worth another try: the server or the path to it may be back in a moment.
    var isTransient: Bool {
        [
            CURLE_COULDNT_CONNECT, CURLE_COULDNT_RESOLVE_HOST, CURLE_OPERATION_TIMEDOUT, CURLE_RECV_ERROR,
            CURLE_SEND_ERROR, CURLE_GOT_NOTHING, CURLE_PARTIAL_FILE, CURLE_HTTP2, CURLE_HTTP2_STREAM,
            CURLE_SEND_FAIL_REWIND,
        ].contains(code)
    }
}

/// Makes requests, one at a time, on one libcurl handle: its connections (and TLS sessions) are
/// kept for the next request to the same host. `allowPlainHTTP` lets `http://` URLs (and
/// redirects to them) through; without it only `https://` is spoken. A transfer that moves less
/// than `DownloadFloor` (32 KiB in 30 s) is dropped, so a stalled or trickling server cannot hang
/// the tool (curl's usual floor, a byte a second, let one that sends a byte every half second).
final class HTTPTransfer {
    let allowPlainHTTP: Bool
    /// The certificates to trust instead of the system's (PEM), when a registry has its own CA.
    var certificates: Data?
    /// A folder of hashed CA certificates to trust instead of libcurl's bundle, read as needed.
    var certificateFolder: String?
    var connectTimeout = 30
    private let curl: UnsafeMutableRawPointer

    init(allowPlainHTTP: Bool) throws {
        self.allowPlainHTTP = allowPlainHTTP
        guard let curl = curl_easy_init() else { throw TransportError(code: CURLE_FAILED_INIT, detail: "libcurl did not start") }
        self.curl = curl
    }

    deinit { curl_easy_cleanup(curl) }

    /// The most a response body kept in memory may hold (a manifest, an error): a server cannot
    /// make the tool take all memory.
    static let bodyLimit = 8 << 20

    /// The most header bytes the responses to one request may have, redirects' included. libcurl
    /// stops at 300 KiB, but as a failed receive, which is tried again as a dropped connection is;
    /// below that, it is said as the server's doing. A registry's headers are a few KiB.
    static let headerLimit = 256 << 10

    /// The longest header line libcurl takes (CURL_MAX_HTTP_HEADER). A longer one fails the
    /// transfer as "Out of memory", with no message.
    static let headerLineLimit = 100 << 10

    /// Sends `request`. A successful (2xx) response's body goes to `sink` (a non-nil return is the
    /// error to stop with) when there is one; any other body goes into the response, up to
    /// `bodyLimit`. `sent` hears of each uploaded chunk's size.
    func perform(
        _ request: HTTPRequest, sink: ((UnsafeRawBufferPointer) -> (any Error)?)? = nil,
        sent: ((Int) -> Void)? = nil
    ) throws -> HTTPResponse {
        // The options of the last request go; its connections stay.
        curl_easy_reset(curl)
        let context = TransferContext(sink: sink, sent: sent, body: request.body)
        let unmanaged = Unmanaged.passRetained(context)
        defer { unmanaged.release() }
        // libcurl writes its error message here during the transfer: memory that outlives each call.
        let errorBuffer = UnsafeMutablePointer<CChar>.allocate(capacity: Int(CURL_ERROR_SIZE) + 1)
        errorBuffer.initialize(repeating: 0, count: Int(CURL_ERROR_SIZE) + 1)
        defer { errorBuffer.deallocate() }
        var headerList: UnsafeMutablePointer<curl_slist>?
        defer { curl_slist_free_all(headerList) }
        for line in request.headers + ["Expect:"] { headerList = curl_slist_append(headerList, line) }

        let protocols = allowPlainHTTP ? "http,https" : "https"
        var status = CURLE_OK
        func set(_ code: CURLcode) { if status == CURLE_OK { status = code } }
        set(lc_curl_set_string(curl, CURLOPT_URL, request.url))
        set(lc_curl_set_string(curl, CURLOPT_PROTOCOLS_STR, protocols))
        set(lc_curl_set_string(curl, CURLOPT_REDIR_PROTOCOLS_STR, protocols))
        set(lc_curl_set_long(curl, CURLOPT_NOSIGNAL, 1))
        if let certificates {
            set(certificates.withUnsafeBytes { lc_curl_set_ca_bundle(curl, $0.baseAddress, $0.count) })
        } else if let certificateFolder {
            set(lc_curl_set_string(curl, CURLOPT_CAINFO, nil))
            set(lc_curl_set_string(curl, CURLOPT_CAPATH, certificateFolder))
        }
        set(lc_curl_set_long(curl, CURLOPT_CONNECTTIMEOUT, connectTimeout))
        set(lc_curl_set_long(curl, CURLOPT_LOW_SPEED_LIMIT, DownloadFloor.bytesPerSecond))
        set(lc_curl_set_long(curl, CURLOPT_LOW_SPEED_TIME, DownloadFloor.seconds))
        set(lc_curl_set_string(curl, CURLOPT_USERAGENT, "layerctl"))
        set(lc_curl_set_pointer(curl, CURLOPT_HTTPHEADER, UnsafeMutableRawPointer(headerList)))
        set(lc_curl_set_pointer(curl, CURLOPT_ERRORBUFFER, errorBuffer))
        set(lc_curl_set_pointer(curl, CURLOPT_WRITEDATA, unmanaged.toOpaque()))
        set(lc_curl_set_function(curl, CURLOPT_WRITEFUNCTION, receiveBody))
        set(lc_curl_set_pointer(curl, CURLOPT_HEADERDATA, unmanaged.toOpaque()))
        set(lc_curl_set_function(curl, CURLOPT_HEADERFUNCTION, receiveHeader))
        set(lc_curl_set_pointer(curl, CURLOPT_READDATA, unmanaged.toOpaque()))
        set(lc_curl_set_function(curl, CURLOPT_READFUNCTION, sendBody))
        // A kept connection that turns out dead makes libcurl send the request again: it rewinds.
        set(lc_curl_set_pointer(curl, CURLOPT_SEEKDATA, unmanaged.toOpaque()))
        set(lc_curl_set_seek(curl, rewindBody))
        switch request.method {
        case "GET":
            set(lc_curl_set_long(curl, CURLOPT_FOLLOWLOCATION, 1))
            set(lc_curl_set_long(curl, CURLOPT_MAXREDIRS, 5))
        case "HEAD":
            set(lc_curl_set_long(curl, CURLOPT_NOBODY, 1))
            set(lc_curl_set_long(curl, CURLOPT_FOLLOWLOCATION, 1))
            set(lc_curl_set_long(curl, CURLOPT_MAXREDIRS, 5))
        default:
            // POST, PUT, PATCH, DELETE: an upload of the body's length, under the method's name.
            set(lc_curl_set_long(curl, CURLOPT_UPLOAD, 1))
            set(lc_curl_set_offset(curl, CURLOPT_INFILESIZE_LARGE, curl_off_t(context.remaining)))
            set(lc_curl_set_string(curl, CURLOPT_CUSTOMREQUEST, request.method))
        }
        guard status == CURLE_OK else { throw TransportError(code: status, detail: String(cString: curl_easy_strerror(status))) }

        let result = curl_easy_perform(curl)
        if let error = context.sinkError { throw error }
        guard result == CURLE_OK else {
            let detail = String(decoding: UnsafeBufferPointer(start: errorBuffer, count: strlen(errorBuffer)).map(UInt8.init(bitPattern:)), as: UTF8.self)
            if result == CURLE_OUT_OF_MEMORY, detail.isEmpty, context.inHeaders {
                throw TransportError(
                    code: CURLE_WEIRD_SERVER_REPLY,
                    detail: "the response has a header line longer than libcurl takes (\(HTTPTransfer.headerLineLimit >> 10) KiB)")
            }
            let said = detail.isEmpty ? String(cString: curl_easy_strerror(result)) : detail
            throw TransportError(code: result, detail: result == CURLE_WEIRD_SERVER_REPLY ? "the answer breaks HTTP: " + said : said)
        }
        var code = 0
        _ = lc_curl_get_long(curl, CURLINFO_RESPONSE_CODE, &code)
        return HTTPResponse(status: code, headers: context.headers, body: context.body)
    }
}

/// What libcurl's callbacks reach: the body source, the sink, the headers so far.
private final class TransferContext {
    let sink: ((UnsafeRawBufferPointer) -> (any Error)?)?
    let sent: ((Int) -> Void)?
    var sinkError: (any Error)?
    var headers: [(name: String, value: String)] = []
    var body = Data()
    /// The status of the response being received.
    var status = 0
    /// Whether its headers are being received: its status line came, the blank line after its
    /// headers not yet.
    var inHeaders = false
    /// The header bytes of every response so far.
    var headerBytes = 0
    let source: HTTPRequest.Body
    var position: Int64 = 0
    var remaining: Int64

    let length: Int64

    init(sink: ((UnsafeRawBufferPointer) -> (any Error)?)?, sent: ((Int) -> Void)?, body: HTTPRequest.Body) {
        self.sink = sink
        self.sent = sent
        self.source = body
        switch body {
        case .none: length = 0
        case .data(let data): length = Int64(data.count)
        case .file(_, _, let length): self.length = length
        }
        remaining = length
    }
}

private func receiveBody(_ buffer: UnsafeMutablePointer<CChar>?, _ size: Int, _ count: Int, _ context: UnsafeMutableRawPointer?) -> Int {
    guard let buffer, let context else { return 0 }
    let transfer = Unmanaged<TransferContext>.fromOpaque(context).takeUnretainedValue()
    let bytes = UnsafeRawBufferPointer(start: buffer, count: size * count)
    if let sink = transfer.sink, (200..<300).contains(transfer.status) {
        if let error = sink(bytes) {
            transfer.sinkError = error
            return 0
        }
    } else {
        guard transfer.body.count + bytes.count <= HTTPTransfer.bodyLimit else {
            transfer.sinkError = TransportError(code: CURLE_FILESIZE_EXCEEDED, detail: "the response is larger than 8 MiB")
            return 0
        }
        transfer.body.append(contentsOf: bytes)
    }
    return size * count
}

private func receiveHeader(_ buffer: UnsafeMutablePointer<CChar>?, _ size: Int, _ count: Int, _ context: UnsafeMutableRawPointer?) -> Int {
    guard let buffer, let context else { return 0 }
    let transfer = Unmanaged<TransferContext>.fromOpaque(context).takeUnretainedValue()
    transfer.headerBytes += size * count
    guard transfer.headerBytes <= HTTPTransfer.headerLimit else {
        transfer.sinkError = TransportError(
            code: CURLE_WEIRD_SERVER_REPLY, detail: "the response's headers pass \(HTTPTransfer.headerLimit >> 10) KiB")
        return 0
    }
    let line = String(decoding: UnsafeRawBufferPointer(start: buffer, count: size * count), as: UTF8.self)
    if line.hasPrefix("HTTP/") {
        // A new response (after a redirect or a 100 Continue): only the last one's headers count.
        transfer.headers = []
        transfer.body = Data()
        transfer.status = Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0
        transfer.inHeaders = true
    } else if line == "\r\n" || line == "\n" {
        transfer.inHeaders = false
    } else if let colon = line.firstIndex(of: ":") {
        let name = line[..<colon].trimmingCharacters(in: .whitespaces).lowercased()
        let value = line[line.index(after: colon)...].trimmingCharacters(in: .whitespacesAndNewlines)
        transfer.headers.append((name, value))
    }
    return size * count
}

private func sendBody(_ buffer: UnsafeMutablePointer<CChar>?, _ size: Int, _ count: Int, _ context: UnsafeMutableRawPointer?) -> Int {
    guard let buffer, let context else { return Int(CURL_READFUNC_ABORT) }
    let transfer = Unmanaged<TransferContext>.fromOpaque(context).takeUnretainedValue()
    let wanted = Int(min(Int64(size * count), transfer.remaining))
    guard wanted > 0 else { return 0 }
    var copied = 0
    switch transfer.source {
    case .none: return 0
    case .data(let data):
        let start = Int(transfer.position)
        data.withUnsafeBytes { bytes in
            UnsafeMutableRawPointer(buffer).copyMemory(from: bytes.baseAddress! + start, byteCount: wanted)
        }
        copied = wanted
    case .file(let descriptor, let offset, _):
        let count = pread(descriptor, buffer, wanted, off_t(offset + transfer.position))
        guard count > 0 else { return Int(CURL_READFUNC_ABORT) }
        copied = count
    }
    transfer.position += Int64(copied)
    transfer.remaining -= Int64(copied)
    transfer.sent?(copied)
    return copied
}

private func rewindBody(_ context: UnsafeMutableRawPointer?, _ offset: curl_off_t, _ origin: Int32) -> Int32 {
    guard let context, origin == SEEK_SET else { return Int32(CURL_SEEKFUNC_CANTSEEK) }
    let transfer = Unmanaged<TransferContext>.fromOpaque(context).takeUnretainedValue()
    guard offset >= 0, Int64(offset) <= transfer.length else { return Int32(CURL_SEEKFUNC_FAIL) }
    transfer.position = Int64(offset)
    transfer.remaining = transfer.length - Int64(offset)
    return Int32(CURL_SEEKFUNC_OK)
}
