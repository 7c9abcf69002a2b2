package inbound

import (
	"fmt"

	"github.com/emersion/go-smtp"
)

// reply kinds: every refusal the front end gives comes from this table, so
// the wire text stays generic and the real cause goes to the log only.
type replyKind int

const (
	replyNotCampaign replyKind = iota
	replyTooBig
	replyBadFrom
	replyBareLineEnding
	replyUnverified
	replyDNSTemporary
	replyStoreFailed
	replyTimeout
	replyReadFailed
	replyShuttingDown
	replyOneKindOfRecipient
	replyLineTooLong
	replyFoldedTooMuch
	replyNoSpace
	replyBusy
	replyUnverifiedCap
	replyPrimaryOnly
	replyConfirmUnknown
	replyConfirmAlone
)

var replies = map[replyKind]smtp.SMTPError{
	replyNotCampaign:    {Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "relaying denied: this server takes letters for the campaign's addresses only"},
	replyTooBig:         {Code: 552, EnhancedCode: smtp.EnhancedCode{5, 3, 4}, Message: "message too big"},
	replyBadFrom:        {Code: 550, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: "a letter needs exactly one From: header with exactly one address"},
	replyBareLineEnding: {Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: "bare CR or LF in the message; lines must end with CRLF"},
	replyUnverified:     {Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 20}, Message: "neither a valid DKIM signature nor SPF for the envelope sender aligned with the From: domain"},
	replyDNSTemporary:   {Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 5}, Message: "a DNS lookup (DKIM key or SPF record) failed temporarily; try again later"},
	replyStoreFailed:    {Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "temporary problem storing the letter; try again later"},
	replyTimeout:        {Code: 451, EnhancedCode: smtp.EnhancedCode{4, 4, 2}, Message: "timeout reading the message; try again"},
	replyReadFailed:     {Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "error reading the message; try again"},
	replyShuttingDown:   {Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "shutting down, try again later"},
	replyLineTooLong: {Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0},
		Message: fmt.Sprintf("a line of the message is longer than %d octets", maxLineLength)},
	replyFoldedTooMuch: {Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0},
		Message: "header fields folded over too many lines"},
	replyNoSpace: {Code: 452, EnhancedCode: smtp.EnhancedCode{4, 3, 1}, Message: "insufficient system storage; try again later"},
	replyBusy: {Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 1},
		Message: "too many letters arriving at once; try again later"},
	replyUnverifiedCap: {Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 1},
		Message: "too much unverified mail from your network or domain this hour; try again later"},
	replyPrimaryOnly: {Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0},
		Message: "this address is served by the primary mail server only; try again later"},
	replyConfirmUnknown: {Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1},
		Message: "no such confirmation address: it is unknown, was used already, or expired"},
	replyConfirmAlone: {Code: 452, EnhancedCode: smtp.EnhancedCode{4, 5, 3},
		Message: "a reply to a confirmation request goes in a transaction of its own; send this one again"},
	replyOneKindOfRecipient: {Code: 452, EnhancedCode: smtp.EnhancedCode{4, 5, 3},
		Message: "letters to the campaign and mail to postmaster go in separate transactions; send this one again"},
}

// reply builds the bare *smtp.SMTPError go-smtp needs to keep the code (a
// wrapped error would become a permanent 554 carrying internal text);
// go-smtp adds the session ID to it, as to every refusal (refusalNote).
func (ss *session) reply(k replyKind) error {
	r := replies[k]
	return &r
}
