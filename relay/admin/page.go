package admin

import (
	"html/template"
	"net/http"
	"slices"
)

// The organisers' page: the tally and every batch with where each copy is,
// and the batch's message to download as delivered. Read-only; it shows no
// sender addresses, only counts (the batches themselves name the senders).
var pageTemplate = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>petitiond: the tally</title>
<style>body{font-family:sans-serif;margin:1.5em;max-width:60em}table{border-collapse:collapse}
td,th{padding:.2em .8em;border-bottom:1px solid #ddd;text-align:left}.n{font-size:2em}</style></head>
<body>
<h1>Letters counted: <span class="n" id="counted">{{.Stats.Counted}}</span></h1>
<p>Duplicates (counted once): {{.Stats.Duplicates}} · held for an admin: {{.Stats.Held}} ·
rejected: {{.Stats.Rejected}} · waiting for the next batch: {{.Stats.Pending}} · batches: {{.Stats.Batches}}</p>
<h2>Batches, newest first</h2>
{{if .Batches}}<table>
<tr><th>batch</th><th>closed</th><th>letters</th><th>copies</th><th></th></tr>
{{range .Batches}}<tr><td>{{.ID}}</td><td>{{.Created.Format "2006-01-02 15:04 UTC"}}</td><td>{{.Letters}}</td>
<td>{{range .Recipients}}{{.Address}}: {{.State}}{{if .LastError}} ({{.LastError}}){{end}}<br>{{end}}</td>
<td><a href="/api/batches/{{.ID}}/message">message (.eml)</a></td></tr>
{{end}}</table>{{else}}<p>No batch yet.</p>{{end}}
</body></html>
`))

func (s *Server) page(w http.ResponseWriter, r *http.Request) {
	st, err := s.st.Stats()
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	batches, err := s.st.Batches()
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	data := struct {
		Stats   Stats
		Batches []Batch
	}{Stats: apiStats(st)}
	for _, b := range slices.Backward(batches) {
		data.Batches = append(data.Batches, apiBatch(b, false))
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := pageTemplate.Execute(w, data); err != nil {
		s.log.Warn("writing the organisers' page failed", "err", err)
	}
}
