/* placeholder until Schemas/generate.sh runs */
