package cli

import (
	"fmt"

	"github.com/urfave/cli/v2"
)

func gitlabBootstrapAction(c *cli.Context) error {
	asJSON, err := jsonOut(c)
	if err != nil {
		return err
	}
	cl, token, err := tokenClient(c, newSecretInput(c))
	if err != nil {
		return err
	}
	var res struct {
		Steps []struct {
			Path   string `json:"path"`
			Action string `json:"action"`
		} `json:"steps"`
	}
	if err := cl.call("POST", "gitlab/bootstrap", struct{}{}, &res, token); err != nil {
		return err
	}
	if asJSON {
		printJSON(c.App.Writer, res)
		return nil
	}
	for _, s := range res.Steps {
		fmt.Fprintf(c.App.Writer, "%-8s %s\n", s.Action, s.Path)
	}
	fmt.Fprintln(c.App.Writer, "GitLab bootstrap applied: GitLab Rails can log in at auth/gitlab_rails_jwt (role app).")
	return nil
}
