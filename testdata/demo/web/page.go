package web

import (
	"fmt"
	"html/template"
)

// price formats cents as dollars: 1250 -> "$12.50".
func price(cents int64) string {
	return fmt.Sprintf("$%d.%02d", cents/100, cents%100)
}

// page lists the products; executed with []*catalogv1.Product. Each buy
// form posts to /buy?product=ID, which loadgen finds in the page too.
var page = template.Must(template.New("index").Funcs(template.FuncMap{"price": price}).Parse(`<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>mesh demo shop</title></head>
<body>
<h1>mesh demo shop</h1>
<table>
<tr><th>Product</th><th>Description</th><th>Price</th><th></th></tr>
{{- range .}}
<tr><td>{{.Name}}</td><td>{{.Description}}</td><td>{{price .PriceCents}}</td>
<td><form method="post" action="/buy?product={{.Id}}"><button>Buy</button></form></td></tr>
{{- end}}
</table>
</body>
</html>
`))
