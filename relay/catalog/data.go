package catalog

import "time"

// The data each message is made with. A message's comment in the catalogue
// files names the type it takes; the fields are facts, never text in a
// language, except Detail fields (an error from a parser, kept as it came).

// Verdict is how a letter verified (SPEC 5), for the message "verdict".
type Verdict struct {
	// Kind is one of the verdict words: dkim, spf, confirmed, admin,
	// unverified.
	Kind string
	// Domain is the DKIM signing domain (dkim) or the MAIL FROM domain
	// (spf); "" for the other kinds.
	Domain string
}

// Note is something the reader should know about how a letter's text is
// shown, for the message "batch.note". Kind is one of:
//
//	repaired          its line endings were repaired, so its own signature may fail
//	html_only         no plain text part: its HTML is shown without tags
//	unknown_charset   its charset is unknown: shown as received
//	unknown_encoding  its transfer encoding is unknown: shown as received
//	no_text           nothing to show (an image, say)
//	empty             its text part is empty
//	unreadable        the MIME structure could not be read (Detail says why)
//	decode_error      the rest of its text could not be decoded (Detail says why)
//	cut               cut short; the whole letter is in the attachment
type Note struct {
	Kind   string
	Detail string
}

// Batch is the data of the batch messages: batch.subject,
// batch.csv_filename, batch.digest_description and batch.summary.
type Batch struct {
	Campaign     string // campaign.name, on one line
	Number       uint64
	Count        int    // letters in this batch
	Verified     int    // of them, verified by DKIM, SPF or the sender's reply
	RunningTotal uint64 // letters counted so far, this batch included
	First, Last  time.Time
	CSVName      string        // the attached list's file name
	QuoteMark    string        // what every line of a letter's own text starts with
	Letters      []BatchLetter // in received order
	// Part and Parts are set when the message is part Part of Parts of a
	// batch whose recipient's server refused it as one message (too big):
	// it then carries letters FirstN to LastN of the batch's BatchCount,
	// and each letter's N is its place in the whole batch. All 0 for a
	// whole batch.
	Part, Parts   int
	BatchCount    int
	FirstN, LastN int
}

// BatchLetter is one letter of a batch.
type BatchLetter struct {
	N        int // 1-based position in the batch (the whole batch, for a part)
	ID       string
	Who      string // "Name <address>", or the address alone
	Received time.Time
	Verdict  Verdict
	Subject  string // on one line; "" if none
	// Before and After are notes shown before and after the text.
	Before, After []Note
	// Quoted is the letter's text with every line starting with QuoteMark;
	// "" when there is no text to show (the notes say why).
	Quoted string
}

// Page is the data of the organisers' pages' titles and of the messages
// that name the campaign or a batch by number (page.title.*,
// page.login.intro, page.error.*).
type Page struct {
	Campaign string // campaign.name, on one line
	Batch    uint64 // the batch a page is about; 0 for none
}

// Tally is the data of page.tally.*: the counts of the organisers' home
// page.
type Tally struct {
	Counted    uint64 // letters counted so far
	Pending    uint64 // of them, waiting for the next batch
	Batches    uint64 // batches closed
	Duplicates uint64 // letters from a sender already counted
	Held       uint64 // letters waiting for an admin's decision
}

// BatchLine is one batch in the home page's list: page.batch.line.
type BatchLine struct {
	Number  uint64
	Count   int // letters in it
	Created time.Time
}

// Delivery is where one recipient's copy of a batch is, for
// page.delivery.
type Delivery struct {
	// State is queued, deferred, delivered or failed.
	State string
	// Next is the next try of a queued or deferred copy; zero when it is
	// due now.
	Next time.Time
	// Done is when a copy was delivered or failed.
	Done time.Time
	// Error is the last error, as the receiving server or the connection
	// gave it (a Detail: not in the catalogue's language).
	Error string
}

// LetterState says where a counted letter is, for page.letter.state.
type LetterState struct {
	Batch uint64 // the batch that carried it; 0 while it waits for one
}

// Search is the data of page.search.results and page.search.cut.
type Search struct {
	Query   string // what was asked, on one line
	Found   int    // letters that contain every word
	Shown   int    // of them, listed
	Scanned int    // letters read
	// Cut is set when the search stopped before reaching the oldest
	// letter, at its bound.
	Cut bool
}

// Supporter is the data of the mail to supporters (supporter.*): nothing
// in it comes from the letter's own text, since whoever sent the letter
// may not own the address the mail goes to.
type Supporter struct {
	Campaign string // campaign.name, on one line
	Address  string // the supporter's address, where the mail goes
	LetterID string
	Received time.Time // when the letter arrived
	// Expires is, in a confirmation request, when a reply stops counting.
	Expires time.Time
	// Count is, in a receipt, how many letters were counted with it, it
	// included.
	Count uint64
}
