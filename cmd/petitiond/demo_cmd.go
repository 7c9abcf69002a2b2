package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/mail"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/petitiond/petitiond/config"
	"github.com/petitiond/petitiond/internal/keyserver"
	"github.com/petitiond/petitiond/internal/smtpclient"
	"github.com/petitiond/petitiond/internal/testenv"
	"github.com/petitiond/petitiond/internal/wait"
	"github.com/petitiond/petitiond/relay"
	"github.com/petitiond/petitiond/relay/admin"
	"github.com/petitiond/petitiond/store"
)

const demoUsage = "demo [-letters N] [-keep] [-exit] [-dir DIR] [-v]"

const demoNote = `
A tour on a throwaway store, with nothing outside this machine: it starts a
DNS server on 127.0.0.1 publishing DKIM keys for a few made-up supporter
domains, and the daemon (SMTP on a free 127.0.0.1 port, batches and the mail
to supporters written as Maildirs, verify.unverified = "confirm"). Then N
supporters send signed letters, one sends again under another spelling of
the address, one letter comes without a signature and is confirmed by a
reply to the request its sender gets, and one comes with a forged envelope,
which gets no request. It shows the replies, the batch each recipient got,
the held letter and the tally, and keeps running (until Ctrl-C) so you can
send letters yourself.
`

const (
	maxDemoLetters = 200
	// demoMaxWait closes a batch that has fewer letters than -letters, such
	// as ones sent by hand; the tour's own batch closes on its count.
	demoMaxWait = 5 * time.Second
	// demoBatchTimeout bounds the wait for the tour's batch to be delivered.
	demoBatchTimeout = demoMaxWait + 30*time.Second
	demoSelector     = "demo"
	demoIOTimeout    = 10 * time.Second
)

// demoSupporter is one made-up supporter of the tour.
type demoSupporter struct {
	name, local, domain, lang string
}

func (s demoSupporter) address() string { return s.local + "@" + s.domain }

func (s demoSupporter) header() string {
	// net/mail writes a non-ASCII name as an RFC 2047 encoded word, as mail
	// clients do.
	return (&mail.Address{Name: s.name, Address: s.address()}).String()
}

// demoDomains are the supporters' mail domains and their key types: mostly
// ed25519, one RSA, so both verification paths run.
func demoDomains() []testenv.Domain {
	return []testenv.Domain{
		{Name: "correo.example", Algo: "ed25519"},
		{Name: "universidad.example", Algo: "rsa"},
		{Name: "sindicato.example", Algo: "ed25519"},
		{Name: "mail.example.net", Algo: "ed25519"},
	}
}

func demoSupporters(n int) []demoSupporter {
	base := []demoSupporter{
		{"María José Contreras", "mariajose.contreras", "correo.example", "es"},
		{"Joaquín Ñancupil", "joaquin.nancupil", "correo.example", "es"},
		{"Camila Rojas Araya", "camila.rojas", "universidad.example", "es"},
		{"Sebastián Muñoz Leiva", "smunoz", "sindicato.example", "es"},
		{"Francisca Pérez Soto", "fran.perez", "universidad.example", "es"},
		{"Ignacio Fuentes", "ignacio.fuentes", "mail.example.net", "es"},
		{"Valentina Huenchumilla", "vhuenchumilla", "correo.example", "es"},
		{"Ana Lucía Gómez Ibáñez", "analucia.gomez", "sindicato.example", "es"},
		{"Benjamín Tapia", "btapia", "universidad.example", "es"},
		{"Hannah Schmidt", "hannah.schmidt", "mail.example.net", "en"},
		{"Liam O'Brien", "liam.obrien", "mail.example.net", "en"},
		{"Renée Lefèvre", "renee.lefevre", "correo.example", "en"},
	}
	out := make([]demoSupporter, n)
	for i := range out {
		s := base[i%len(base)]
		if round := i / len(base); round > 0 {
			// More letters than sample names: same people, other mailboxes.
			s.local = fmt.Sprintf("%s.%d", s.local, round+1)
		}
		out[i] = s
	}
	return out
}

// demoLetterText is a letter's body; the texts rotate so the batch does not
// read as one letter copied twelve times.
func demoLetterText(lang, name string, i int) (subject, body string) {
	es := []string{
		`Estimadas y estimados:

Les escribo para pedir la libertad de las presas y los presos políticos de la
revuelta de octubre de 2019 en Chile. Muchas y muchos llevan años en prisión
preventiva o cumplen condenas desproporcionadas por haber protestado.

Pido que se respete el derecho a la protesta, que se revisen sus causas y que
vuelvan con sus familias.

Atentamente,
`,
		`A quien corresponda:

Han pasado años desde el estallido social del 18 de octubre de 2019 y todavía
hay jóvenes privados de libertad por haber salido a la calle. Exijo su
libertad, y verdad, justicia y reparación para las víctimas de la represión.

¡Libertad a los presos políticos de la revuelta!

`,
		`Queridas familias:

Me sumo a esta carta colectiva. Nadie debería seguir preso por manifestarse
en octubre de 2019. Pido al Estado de Chile que ponga fin a la prisión
política y que se haga justicia.

Con cariño y solidaridad,
`,
	}
	en := []string{
		`Dear friends,

I am writing to ask for the release of the political prisoners of the
October 2019 revolt in Chile. Protest is not a crime, and years of pre-trial
detention are a punishment without a trial.

Free them, and let them go home to their families.

Sincerely,
`,
		`To whom it may concern,

I join the families in asking for freedom for everyone still imprisoned for
taking part in the social uprising that began on 18 October 2019 in Chile.
Truth, justice and reparation for the victims of the repression.

In solidarity,
`,
	}
	if lang == "en" {
		return "Free the political prisoners of the October 2019 revolt", en[i%len(en)] + name + "\n"
	}
	return "Libertad a los presos políticos de la revuelta", es[i%len(es)] + name + "\n"
}

// demoMessage is a plain UTF-8 letter as a mail client would write it.
func demoMessage(s demoSupporter, to string, i int, now time.Time) []byte {
	subject, body := demoLetterText(s.lang, s.name, i)
	var b strings.Builder
	fmt.Fprintf(&b, "From: %s\n", s.header())
	fmt.Fprintf(&b, "To: <%s>\n", to)
	fmt.Fprintf(&b, "Subject: %s\n", mime.QEncoding.Encode("utf-8", subject))
	fmt.Fprintf(&b, "Date: %s\n", now.Format(time.RFC1123Z))
	fmt.Fprintf(&b, "Message-ID: <%s@%s>\n", strings.ToLower(rand.Text()), s.domain)
	b.WriteString("MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n")
	b.WriteString(body)
	return []byte(strings.ReplaceAll(b.String(), "\n", "\r\n"))
}

// demo is one run of the tour.
type demo struct {
	out io.Writer
	dir string
	env *testenv.Env
}

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	fl := newFlags("demo", demoUsage, stderr)
	letters := fl.Int("letters", 12, fmt.Sprintf("how many supporters send a signed letter (1 to %d); the tour's batch closes at that many and the confirmed one", maxDemoLetters))
	keep := fl.Bool("keep", false, "keep the demo's folder (store, outbox, log) when it ends")
	exit := fl.Bool("exit", false, "stop after the summary instead of running until Ctrl-C")
	base := fl.String("dir", "", "make the demo's folder inside `DIR` (default the system's temp dir)")
	verbose := fl.Bool("v", false, "also write the daemon's log to stderr")
	printUsage := fl.Usage
	fl.Usage = func() {
		printUsage()
		fmt.Fprint(stderr, demoNote)
	}
	if err := parseFlags(fl, args); err != nil {
		return err
	}
	if fl.NArg() > 0 || *letters < 1 || *letters > maxDemoLetters {
		if fl.NArg() > 0 {
			fmt.Fprintf(stderr, "petitiond demo: unexpected argument %q\n", fl.Arg(0))
		} else {
			fmt.Fprintf(stderr, "petitiond demo: -letters %d: want 1 to %d\n", *letters, maxDemoLetters)
		}
		fmt.Fprintf(stderr, "usage: petitiond %s\n", demoUsage)
		return errUsage
	}

	dir, err := os.MkdirTemp(*base, "petitiond-demo-")
	if err != nil {
		return fmt.Errorf("demo folder: %w", err)
	}
	defer func() {
		if *keep {
			fmt.Fprintf(stdout, "\nKept %s (remove it when done).\n", dir)
			return
		}
		if rerr := os.RemoveAll(dir); rerr != nil {
			err = errors.Join(err, fmt.Errorf("remove demo folder: %w", rerr))
			return
		}
		fmt.Fprintf(stdout, "\nRemoved %s.\n", dir)
	}()

	logFile, err := os.OpenFile(filepath.Join(dir, "petitiond.log"), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer logFile.Close()
	var logOut io.Writer = logFile
	if *verbose {
		logOut = io.MultiWriter(logFile, stderr)
	}
	log := slog.New(slog.NewTextHandler(logOut, nil))

	t := &demo{out: stdout, dir: dir}
	if err := t.start(*letters, log); err != nil {
		return err
	}
	defer func() { err = errors.Join(err, t.stop()) }()

	if err := t.tour(ctx, *letters); err != nil {
		return err
	}
	if *exit {
		return nil
	}
	fmt.Fprintf(stdout, "\nThe demo keeps running: press Ctrl-C to stop it (then %s is removed, unless -keep).\n", dir)
	<-ctx.Done()
	fmt.Fprintln(stdout, "\nStopping.")
	return nil
}

// start runs the key server and the daemon; on failure nothing is left
// running.
func (t *demo) start(letters int, log *slog.Logger) error {
	env, err := testenv.New(testenv.Options{
		Dir:      t.dir,
		StoreDir: filepath.Join(t.dir, "store"),
		Selector: demoSelector,
		Domains:  demoDomains(),
		Logger:   log,
		Configure: func(cfg *config.Config) {
			cfg.Verify.DNSTimeout = config.Duration{Duration: 2 * time.Second}
			cfg.Delivery.Mode = "maildir"
			cfg.Verify.Unverified = config.UnverifiedConfirm
			// The signed letters and the one confirmed by reply.
			cfg.Batch.MaxLetters = letters + 1
			cfg.Batch.MaxWait = config.Duration{Duration: demoMaxWait}
			// A free port rather than 8025, so the demo runs beside a real daemon.
			cfg.Admin.Listen = "127.0.0.1:0"
		},
	})
	if err != nil {
		return err
	}
	// The tour names the domains whose keys are served: serve them all.
	if err := env.DNS.PublishAll(); err != nil {
		return errors.Join(err, env.Close())
	}
	// The forged letter's domain authorises other servers than this one.
	env.DNS.SetTXT(demoForged.domain, "v=spf1 ip4:192.0.2.0/24 -all")
	if err := env.Start(); err != nil {
		return errors.Join(err, env.Close())
	}
	t.env = env
	return nil
}

// stop shuts the daemon and the key server down.
func (t *demo) stop() error { return t.env.Close() }

func (t *demo) campaignAddr() string { return t.env.CampaignAddr() }

// tour sends the letters, waits for the batch and prints what happened.
func (t *demo) tour(ctx context.Context, letters int) error {
	out := t.out
	fmt.Fprintf(out, "petitiond demo, in %s\n\n", t.dir)
	cfg := t.env.Config
	fmt.Fprintf(out, "  SMTP          %s (for %s)\n", t.env.SMTPAddr(), t.campaignAddr())
	fmt.Fprintf(out, "  DKIM keys     served by a DNS server on %s for %s\n", t.env.DNS.Addr, strings.Join(t.env.DNS.Domains(), ", "))
	fmt.Fprintf(out, "  batches       close at %d letters or after %s, written to %s\n", letters+1, demoMaxWait, cfg.DataPath(cfg.Delivery.Maildir))
	fmt.Fprintf(out, "  supporters    mail to them written to %s\n", relay.SupportersMaildir(cfg))
	if url := t.env.AdminURL(); url != "" {
		fmt.Fprintf(out, "  admin API     %s\n", url)
	}
	fmt.Fprintf(out, "  daemon log    %s\n\n", filepath.Join(t.dir, "petitiond.log"))

	supporters := demoSupporters(letters)
	fmt.Fprintf(out, "%d supporters send a letter, each signed (DKIM) by their mail domain:\n", len(supporters))
	for i, s := range supporters {
		if err := t.send(ctx, s, i, true); err != nil {
			return err
		}
	}

	dup := supporters[min(2, len(supporters)-1)]
	dup.local += "+otra"
	fmt.Fprintf(out, "\n%s writes again, from %s (the same address with a +tag):\n", dup.name, dup.address())
	if err := t.send(ctx, dup, len(supporters), true); err != nil {
		return err
	}

	fmt.Fprintf(out, "\nA letter in the name of %s comes from a server %s does not authorise (SPF fails),\n"+
		"so its envelope may be forged: no confirmation request goes to the address, the letter is held for an admin:\n",
		demoForged.address(), demoForged.domain)
	if err := t.send(ctx, demoForged, len(supporters)+2, false); err != nil {
		return err
	}

	unsigned := demoSupporter{"Pedro Vergara", "pedro.vergara", "sin-dkim.example", "es"}
	fmt.Fprintf(out, "\n%s sends a letter without a DKIM signature (his provider does not sign):\n", unsigned.name)
	if err := t.send(ctx, unsigned, len(supporters)+1, false); err != nil {
		return err
	}
	if err := t.confirm(ctx, unsigned); err != nil {
		return err
	}

	fmt.Fprintf(out, "\nWaiting for the batch to reach both recipients' outboxes ...\n")
	batches, err := t.waitForBatches(ctx, letters+1)
	if err != nil {
		return err
	}
	return t.summary(batches)
}

// send delivers one letter in its own SMTP session, as a supporter's
// provider would, and prints the reply. Every tour letter must get a 250:
// anything else means the demo itself is broken.
func (t *demo) send(ctx context.Context, s demoSupporter, i int, sign bool) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("interrupted: %w", err)
	}
	msg := demoMessage(s, t.campaignAddr(), i, time.Now())
	if sign {
		var err error
		if msg, err = t.env.DNS.Sign(s.domain, msg, keyserver.SignOptions{}); err != nil {
			return err
		}
	}
	r, err := smtpclient.SendMail(t.env.SMTPAddr(), "mail."+s.domain, s.address(), []string{t.campaignAddr()}, msg, demoIOTimeout)
	if err != nil {
		return fmt.Errorf("send the letter from %s: %w", s.address(), err)
	}
	fmt.Fprintf(t.out, "  %-58s %d %s\n", s.name+" <"+s.address()+">", r.Code, strings.ReplaceAll(r.Text, "\n", " / "))
	if r.Code != 250 {
		return fmt.Errorf("the letter from %s was refused: %s", s.address(), r)
	}
	return nil
}

// demoForged is the supporter whose address a forged letter uses.
var demoForged = demoSupporter{"Nadie Real", "nadie", "correo.example", "es"}

// confirm waits for the confirmation request to s in the supporters
// Maildir, shows it, and replies to it as s would.
func (t *demo) confirm(ctx context.Context, s demoSupporter) error {
	var path, confirmAddr string
	err := wait.Until(ctx, demoIOTimeout, func() (bool, error) {
		files, err := t.env.SupporterMail()
		if err != nil {
			return false, err
		}
		for _, f := range files {
			m, err := testenv.ReadMail(f)
			if err != nil {
				return false, err
			}
			if to, err := mail.ParseAddress(m.Header.Get("To")); err == nil && to.Address == s.address() {
				path = f
				confirmAddr, err = testenv.ReplyTo(m)
				return true, err
			}
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("the confirmation request to %s: %w", s.address(), err)
	}
	fmt.Fprintf(t.out, "  It is held, and %s gets a confirmation request (in the campaign's language) asking for a reply:\n    %s\n"+
		"  Reply-To: %s\n", s.address(), path, confirmAddr)
	msg := []byte(strings.ReplaceAll(fmt.Sprintf("From: %s\nTo: <%s>\nSubject: Re: Confirma tu carta\nDate: %s\n"+
		"Message-ID: <%s@%s>\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\nSí, la mandé yo.\n",
		s.header(), confirmAddr, time.Now().Format(time.RFC1123Z), strings.ToLower(rand.Text()), s.domain), "\n", "\r\n"))
	r, err := smtpclient.SendMail(t.env.SMTPAddr(), "mail."+s.domain, s.address(), []string{confirmAddr}, msg, demoIOTimeout)
	if err != nil {
		return fmt.Errorf("reply to the confirmation request: %w", err)
	}
	fmt.Fprintf(t.out, "  %s replies to it: %d %s\n", s.name, r.Code, strings.ReplaceAll(r.Text, "\n", " / "))
	if r.Code != 250 {
		return fmt.Errorf("the reply to the confirmation request was refused: %s", r)
	}
	fmt.Fprintf(t.out, "  The letter is counted, with verdict \"confirmed\".\n")
	return nil
}

// waitForBatches polls the store until the tour's letters are all batched
// and every copy is delivered, or the deadline passes.
func (t *demo) waitForBatches(ctx context.Context, letters int) ([]store.Batch, error) {
	var batches []store.Batch
	n := 0
	err := wait.Until(ctx, demoBatchTimeout, func() (bool, error) {
		var err error
		if batches, err = t.env.Store().Batches(); err != nil {
			return false, err
		}
		n = 0
		done := true
		for _, b := range batches {
			n += len(b.LetterIDs)
			done = done && b.Complete()
		}
		return n >= letters && done, nil
	})
	switch {
	case errors.Is(err, wait.ErrTimeout):
		return nil, fmt.Errorf("no delivered batch with %d letters after %s (%d letters batched); see %s",
			letters, demoBatchTimeout, n, filepath.Join(t.dir, "petitiond.log"))
	case ctx.Err() != nil:
		return nil, fmt.Errorf("interrupted: %w", ctx.Err())
	case err != nil:
		return nil, err
	}
	return batches, nil
}

// summary prints the batches and their files, the held letters, the tally
// and what to try next.
func (t *demo) summary(batches []store.Batch) error {
	out := t.out
	for _, b := range batches {
		fmt.Fprintf(out, "\nbatch %d: %d letters, Message-ID %s, one identical copy per recipient:\n", b.ID, len(b.LetterIDs), b.MessageID)
		for _, r := range b.Recipients {
			files, err := t.env.Delivered(r.Address)
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "  %-20s %s\n", r.Address, r.State)
			for _, f := range files {
				fmt.Fprintf(out, "    %s\n", f)
			}
		}
	}
	if len(batches) > 0 {
		fmt.Fprintf(out, "\nEach outbox is a Maildir; open one with a mail reader, e.g.\n  mutt -f %s\n"+
			"to see the summary, the CSV of the letters and every letter as received.\n",
			t.env.Maildir(batches[0].Recipients[0].Address))
	}

	held, err := t.env.Store().Held()
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "\nheld for an admin, not counted (%d):\n", len(held))
	for _, l := range held {
		who := l.From
		if l.Name != "" {
			who = l.Name + " <" + l.From + ">"
		}
		fmt.Fprintf(out, "  %s  %s  reason: %s\n", l.ID, who, l.HeldReason)
	}

	st, err := t.env.Store().Stats()
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "\ntally: counted %d, duplicates %d, held %d, rejected %d, batches %d;"+
		" deliveries: queued %d, deferred %d, delivered %d, failed %d;"+
		" confirmation requests: sent %d, confirmed %d\n",
		st.Counted, st.Duplicates, st.Held, st.Rejected, st.Batches,
		st.Deliveries.Queued, st.Deliveries.Deferred, st.Deliveries.Delivered, st.Deliveries.Failed,
		st.Supporters.ConfirmSent, st.Supporters.ConfirmConfirmed)

	host, port, err := net.SplitHostPort(t.env.SMTPAddr())
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "\nWhile the demo runs, send it a letter yourself, for example with swaks:\n"+
		"  swaks --server %s --port %s --from you@example.org --to %s \\\n"+
		"    --header 'Subject: Libertad' --body 'Libertad a los presos políticos.'\n"+
		"It carries no DKIM signature, so it is held and its From address asked to confirm it by reply, like\n"+
		"Pedro's above (verify.unverified = %q): the request lands in %s.\n"+
		"The daemon's log (%s) shows every event.\n",
		host, port, t.campaignAddr(), t.env.Config.Verify.Unverified, relay.SupportersMaildir(t.env.Config),
		filepath.Join(t.dir, "petitiond.log"))
	if url := t.env.AdminURL(); url != "" && len(held) > 0 {
		fmt.Fprintf(out, "\nAnd look at it as an admin would, from another terminal (the daemon made its\n"+
			"admin token at first start; the organisers' pages at %[1]s/ take it too):\n"+
			"  export %[3]s=$(cat %[4]s)\n"+
			"  petitiond stats -admin %[1]s\n"+
			"  petitiond tail -f -admin %[1]s\n"+
			"  petitiond batches -admin %[1]s\n"+
			"  petitiond held -admin %[1]s\n"+
			"  petitiond held release -admin %[1]s %[2]s   (counts it; or: held drop)\n",
			url, held[0].ID, adminTokenEnv, admin.TokenFile(t.env.Config.Store.Dir))
	}
	return nil
}
