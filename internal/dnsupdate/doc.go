// Package dnsupdate changes and reads records on a zone's primary DNS
// server: RFC 2136 UPDATE, signed with TSIG (RFC 8945), each change
// confirmed by querying the server until it answers the new data.
//
// One change is one UPDATE message:
//
//	zone:     the zone (SOA class IN)
//	prereq:   the RRset NAME TYPE exists with exactly the Old values
//	          (RFC 2136 §2.4.2, "value dependent"), or, when Old is empty,
//	          it does not exist (§2.4.3)
//	update:   delete the RRset NAME TYPE; add NAME TTL IN TYPE New...
//	tsig:     the zone's key
//
// The server applies an UPDATE all or nothing, so a failed Apply leaves the
// old records: never a half-written RRset. A record changed by someone else
// since the caller read it fails the prerequisite (YXRRSET / NXRRSET) and is
// refused, not overwritten.
//
//	Apply --UPDATE--> primary --rcode--> NOERROR? --query (RD=0)--> answers New? --> Result
//	                                 \-> Error{Kind: ErrRefused | ErrConflict | ErrServer}
//	      timeout / connection refused -> Error{Kind: ErrUnreachable}
//	      NOERROR but the answer never shows New in ConfirmTimeout -> Error{Kind: ErrNotConfirmed}
//
// Invariants:
//
//   - Updates go over TCP, one exchange and no retransmission, so an update
//     is sent at most once; a lost reply is reported as ErrUnreachable after
//     one query that tells whether the change landed.
//   - Errors name the server, the record and the server's rcode, and say
//     what to do; they never hold the TSIG secret: the client keeps it as a
//     dnsconfig.Secret (prints "[redacted]") and redacts any text from a
//     lower layer before it goes into an Error.
//   - In this package only miekg.go imports github.com/miekg/dns: the rest
//     talks to the small transport interface (transport.go), so a move to
//     its v2 is a swap of that file. (The test servers in dnstest use it too.)
//   - A malformed change (a name outside the zone, a bad value or TTL) is
//     ErrInvalid and is never sent.
package dnsupdate
