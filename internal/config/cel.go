package config

import "github.com/brokerauth/broker/internal/rules"

// expr checks src as a CEL expression of kind k with the environment that
// runs it ([rules.Check]), so that what Validate accepts is what the broker
// can evaluate: a claim may not read claims or request, an access rule may.
func (ck *checker) expr(path, src string, k rules.Kind) {
	if err := rules.Check(src, k); err != nil {
		ck.add(path, "%s", err.Error())
	}
}
