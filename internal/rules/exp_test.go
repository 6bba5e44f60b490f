package rules

import (
	"context"
	"testing"
	"time"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/ext"
)

func TestExp(t *testing.T) {
	env, err := cel.NewEnv(ext.Strings(), ext.Lists(), ext.Sets())
	if err != nil {
		t.Fatal(err)
	}
	for _, src := range []string{
		`[1,2,3,4,5,6,7,8,9,10].map(a, [1,2,3,4,5,6,7,8,9,10].map(b, [1,2,3,4,5,6,7,8,9,10].map(c, [1,2,3,4,5,6,7,8,9,10].map(d, [1,2,3,4,5,6,7,8,9,10].map(e, [1,2,3,4,5,6,7,8,9,10].map(f, a+b+c+d+e+f))))))`,
		`"aaaaaaaaaa".replace("", "aaaaaaaaaa").replace("", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa").replace("", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa").size()`,
		`"aaaaaaaaaa".replace("", "aaaaaaaaaa").replace("", "aaaaaaaaaa").replace("", "aaaaaaaaaa").replace("", "aaaaaaaaaa").replace("", "aaaaaaaaaa").replace("", "aaaaaaaaaa").replace("", "aaaaaaaaaa").size()`,
		`lists.range(100000).size()`,
		`"aaaaaaaaaa".replace("", "aaaaaaaaaa").replace("", "aaaaaaaaaa").replace("", "aaaaaaaaaa").size()`,
		`cel.bind(s, "aaaaaaaaaa".replace("", "aaaaaaaaaa").replace("", "aaaaaaaaaa"), s.replace("", s)).size()`,
		`cel.bind(s, "aaaaaaaaaa".replace("", "aaaaaaaaaa").replace("", "aaaaaaaaaa").replace("", "aaaaaaaaaa"), s.replace("", s)).size()`,
		`lists.range(1000).map(x, lists.range(1000)).size()`,
	} {
		ast, iss := env.Compile(src)
		if iss.Err() != nil {
			t.Fatal(iss.Err())
		}
		p, err := env.Program(ast, cel.CostLimit(100000), cel.InterruptCheckFrequency(100))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		start := time.Now()
		out, det, err := p.ContextEval(ctx, map[string]any{})
		cancel()
		var c uint64
		if det != nil && det.ActualCost() != nil {
			c = *det.ActualCost()
		}
		t.Logf("%v %v cost=%d %v", out, err, c, time.Since(start))
	}
}
