// undici 7 (the last line for Node 20) fails a 304 or 204 whose Content-Length is not 0 with a
// "response content-length mismatch" after its headers: no body came, none was due. RFC 9110 8.6
// allows that Content-Length on a 304 (the length the 200 would have had), and ETag revalidation
// through Sluice then turned into a 500. undici 8 ends such responses instead, but needs Node 22.
// This interceptor does the same: the response has ended, so it ends there.
import type { Dispatcher } from 'undici'

const BODILESS = new Set([204, 304])

export const endBodilessResponses: Dispatcher.DispatcherComposeInterceptor = (dispatch) => (opts, handler) => {
  let status = 0
  return dispatch(opts, {
    onRequestStart: (controller, context) => handler.onRequestStart?.(controller, context),
    onRequestUpgrade: (controller, statusCode, headers, socket) => handler.onRequestUpgrade?.(controller, statusCode, headers, socket),
    onResponseStart: (controller, statusCode, headers, statusMessage) => {
      status = statusCode
      handler.onResponseStart?.(controller, statusCode, headers, statusMessage)
    },
    onResponseData: (controller, chunk) => handler.onResponseData?.(controller, chunk),
    onResponseEnd: (controller, trailers) => handler.onResponseEnd?.(controller, trailers),
    onResponseError: (controller, error) => {
      if (BODILESS.has(status) && (error as { code?: string }).code === 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH') {
        handler.onResponseEnd?.(controller, {})
        return
      }
      handler.onResponseError?.(controller, error)
    }
  })
}
